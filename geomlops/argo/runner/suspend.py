"""Suspend templates: approval gates and timed waits.

A ``suspend`` with a ``duration`` waits and goes on. Without one it is an approval gate:
an approval given to the runner up front passes it (who, why and when go in the node's
state); with ``interactive`` the runner asks at the terminal; otherwise the node, and the
run, stop as ``Suspended`` until ``resume`` is called with an approval. Output parameters
with ``valueFrom.supplied`` named ``approver`` (or ``approved_by``), ``reason``,
``approved_at`` or ``override`` receive the approval's fields; one named ``decision`` whose
``enum`` (on the output, or on the gate's input of that name) holds ``refused`` receives
``approved``, or ``refused`` when a person refuses at the prompt (the gate then passes, for the
workflow to record the refusal; a gate without one fails); others take the value the
approver supplied (``Approval.outputs``: ``-o name=value``, or asked at the prompt with their
``default`` and ``enum``), else their ``default``; without one the gate errors, as in Argo.
:func:`check_supplied` refuses an unknown or missing name before a run starts or resumes.
"""

from __future__ import annotations

import getpass
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from geomlops.errors import GeomlopsError, ParameterError

from .context import RunContext
from .model import ERROR, FAILED, RUNNING, SUCCEEDED, SUSPENDED, Approval, NodeState, now_iso
from .outcome import Outcome
from .retry import parse_duration
from .substitute import UnresolvedVariableError, substitute_all, to_argo_string
from .workflow import Workflow

#: the approval question; ``y`` approves, ``n`` refuses (the run fails), Enter leaves it waiting
APPROVE_QUESTION = "Approve? [y/n, Enter: leave it waiting] "
#: ``decision`` of a gate's record when a person refused at it, and the value a supplied
#: ``decision`` output then takes (else ``approved``)
REFUSED, APPROVED = "refused", "approved"
_PROMPT_LOCK = threading.Lock()  # one question at a time, even from parallel branches
_APPROVAL_FIELDS = {"approver": "approver", "approved_by": "approver", "reason": "reason"}
_APPROVAL_FIELDS |= {"approved_at": "at", "override": "override"}


def refused_at(node: NodeState) -> bool:
    """Whether a person refused at this gate (its record's ``decision``)."""
    return (node.approval or {}).get("decision") == REFUSED


def run_suspend(
    engine: RunContext, name: str, template: dict[str, Any], inputs: dict[str, str], scope: dict[str, str]
) -> Outcome:
    """Run a suspend template as node ``name``."""
    node = NodeState(name, str(template["name"]), "Suspend", RUNNING, now_iso(), inputs=inputs)
    engine.store.put(node)
    try:
        spec = substitute_all(template["suspend"] or {}, scope)
        wait = spec.get("duration")
        duration = parse_duration(wait) if wait not in (None, "") else None
    except (UnresolvedVariableError, ValueError) as err:
        return engine.close(node, ERROR, str(err))
    approval: Approval | None = None
    if duration is not None:
        engine.reporter.waiting(name, f"waiting {duration:g}s (suspend.duration)")
        time.sleep(duration)
    elif engine.options.approval is not None:
        approval = engine.options.approval
        node.approval = _record(approval, "approval given to the runner")
    elif engine.options.interactive:
        answer = _ask(engine, name, template, inputs)
        if answer is None:
            return engine.close(node, SUSPENDED, "waiting for approval (no answer at the prompt)")
        if isinstance(answer, str):
            return engine.close(node, FAILED, answer)
        if isinstance(answer, Refusal):  # who and why are kept with the gate, as an approval is
            refused = Approval(answer.approver, answer.reason)
            node.approval = _record(refused, "prompt") | {"decision": REFUSED}
            reason = f": {answer.reason}" if answer.reason else ""
            told = f"refused by {answer.approver}{reason}"
            if decision_output(template) is None:
                return engine.close(node, FAILED, told)
            try:  # the workflow takes the refusal on: its later tasks record it
                node.outputs = supplied_outputs(template, node.approval)
            except ValueError as err:
                return engine.close(node, ERROR, str(err))
            engine.reporter.line(f"✗ {name} {told}")
            return engine.close(node, SUCCEEDED, told)
        approval = answer
        node.approval = _record(approval, "prompt")
    else:
        engine.reporter.waiting(name, "is waiting for approval; resume the run with an approval")
        _show_inputs(engine, template, inputs)
        return engine.close(node, SUSPENDED, "waiting for approval")
    try:
        node.outputs = supplied_outputs(template, node.approval, approval.outputs if approval else None)
    except ValueError as err:
        return engine.close(node, ERROR, str(err))
    if approval is not None:
        engine.reporter.line(f"✓ {name} approved by {approval.approver}: {approval.reason}")
    return engine.close(node, SUCCEEDED, "")


def decision_output(template: Mapping[str, Any]) -> str | None:
    """The gate's supplied output that carries a person's decision, if it has one: named
    ``decision``, with ``refused`` among its allowed values (on the output, or on the gate's
    input of that name, as Hera renders an intermediate parameter). A refusal passes such a gate,
    for the workflow to record; any other output named so is a value like others."""
    inputs = {
        str(p.get("name")): [to_argo_string(v) for v in p.get("enum") or []]
        for p in (template.get("inputs") or {}).get("parameters") or []
    }
    for param in (template.get("outputs") or {}).get("parameters") or []:
        name = str(param.get("name"))
        allowed = [to_argo_string(v) for v in param.get("enum") or []] + inputs.get(name, [])
        if name.lower() == "decision" and "supplied" in (param.get("valueFrom") or {}) and REFUSED in allowed:
            return name
    return None


def _record(approval: Approval, via: str) -> dict[str, str]:
    override = "true" if approval.override else "false"
    return {"approver": approval.approver, "reason": approval.reason, "at": now_iso(), "via": via} | {
        "override": override
    }


def _show_inputs(engine: RunContext, template: Mapping[str, Any], inputs: Mapping[str, str]) -> None:
    """Print a gate's input parameters, what the person is asked to approve (a report, a
    verdict), leaving out those the person supplies (Argo lists them among the inputs too)."""
    supplied = {
        str(p.get("name"))
        for p in (template.get("outputs") or {}).get("parameters") or []
        if "supplied" in (p.get("valueFrom") or {})
    }
    for key, value in inputs.items():
        if key not in supplied:
            engine.reporter.line(f"    {key}: {value}")


@dataclass(frozen=True)
class Refusal:
    """A person's "no" at a gate's prompt: who, and why."""

    approver: str
    reason: str


def _refusal(engine: RunContext) -> Refusal:
    """Who refuses and why, asked after a "no" (input that has ended: this user, no reason).

    A refusal stands whatever the name (anyone at the terminal can stop the run); a name the
    approver rule does not take is recorded as given, and said so in the reason.
    """
    prompt = engine.options.prompt
    try:
        approver = prompt("Refused by: ").strip() or getpass.getuser()
        reason = prompt("Reason: ").strip()
    except EOFError:
        approver, reason = getpass.getuser(), ""
    checked = _approver(engine, approver)
    if isinstance(checked, GeomlopsError):
        return Refusal(approver, f"{reason} (not an approver's name: {checked})".lstrip())
    return Refusal(checked, reason)


def _approver(engine: RunContext, name: str) -> str | GeomlopsError:
    """The name as the caller's approver rule gives it back, or the rule's refusal."""
    check = engine.options.approver_check
    try:
        return check(name) if check is not None else name
    except GeomlopsError as err:
        return err


def _ask(
    engine: RunContext, name: str, template: Mapping[str, Any], node_inputs: Mapping[str, str]
) -> Approval | Refusal | str | None:
    """Ask for approval: an Approval, a Refusal (``n``, then who and why), a message why the
    gate fails, or None to leave the gate waiting (an empty answer, or input has ended); any
    other answer is asked again."""
    prompt = engine.options.prompt
    with _PROMPT_LOCK:
        try:
            engine.reporter.line(f"⏸ {name} (template {template['name']!r}) needs approval")
            _show_inputs(engine, template, node_inputs)
            while True:  # a typo is asked again; no answer leaves the run waiting for --approve
                answer = prompt(APPROVE_QUESTION).strip().lower()
                if answer in ("y", "yes"):
                    break
                if answer in ("n", "no"):
                    return _refusal(engine)
                if not answer:
                    return None
                engine.reporter.line(f"  {answer!r} is neither y nor n; press Enter to leave the run waiting")
            approver = prompt("Approver name: ").strip() or getpass.getuser()
            reason = prompt("Reason: ").strip()
            override = False
            if any(
                str(p.get("name")) == "override"
                for p in (template.get("outputs") or {}).get("parameters") or []
            ):
                override = prompt("Override the policy? [y/N] ").strip().lower() in ("y", "yes")
            values = _ask_values(engine, template)
        except EOFError:
            return None
    checked = _approver(engine, approver)
    if isinstance(checked, GeomlopsError):
        return f"not approved at the prompt: {checked}"
    return Approval(checked, reason, override, values)


def _ask_values(engine: RunContext, template: Mapping[str, Any]) -> dict[str, str]:
    """Ask for each supplied output the approval does not fill, offering its default and enum.

    A value outside the enum, or no value where there is no default, is asked again.

    Raises:
        EOFError: input has ended (the gate stays waiting).
    """
    values: dict[str, str] = {}
    for param in _values_to_supply(template):
        name, value_from = str(param["name"]), param.get("valueFrom") or {}
        enum = [to_argo_string(v) for v in param.get("enum") or []]
        default = to_argo_string(value_from["default"]) if "default" in value_from else None
        hint = f" (one of {', '.join(enum)})" if enum else ""
        question = f"{name}{hint} [{default}]: " if default is not None else f"{name}{hint}: "
        while True:
            answer = engine.options.prompt(question).strip() or default
            if answer is not None and (not enum or answer in enum):
                values[name] = answer
                break
            engine.reporter.line(
                f"  {name}: give one of {', '.join(enum)}" if enum else f"  {name}: a value is needed"
            )
    return values


def _values_to_supply(template: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The outputs of a gate the approver supplies by name (not approver, reason, the decision...)."""
    deciding = decision_output(template)
    return [
        p
        for p in (template.get("outputs") or {}).get("parameters") or []
        if "supplied" in (p.get("valueFrom") or {})
        and "value" not in p
        and _APPROVAL_FIELDS.get(str(p["name"]).lower().replace("-", "_")) is None
        and p["name"] != deciding
    ]


def check_supplied(gates: Iterable[Mapping[str, Any]], approval: Approval) -> None:
    """Check, before a run starts or resumes, the output values an approval supplies to ``gates``.

    Every name must be a supplied output (``valueFrom.supplied``) of one of the gates, within
    its ``enum``; every such output without a ``default`` must be given (Argo's
    ``OverrideOutputParametersWithDefault`` fails on one).

    Raises:
        ParameterError: naming the unknown, missing or out-of-enum output.
    """
    gates = [g for g in gates if not (g.get("suspend") or {}).get("duration")]
    wanted = [(gate, param) for gate in gates for param in _values_to_supply(gate)]
    known: dict[str, list[str]] = {}
    for _gate, param in wanted:
        known.setdefault(str(param["name"]), []).extend(to_argo_string(v) for v in param.get("enum") or [])
    deciding = {decision_output(gate) for gate in gates} - {None}
    for name, value in approval.outputs.items():
        if name in deciding:
            raise ParameterError(
                f"-o {name}: an approval's decision is 'approved'; to refuse, answer 'n' at the "
                "prompt (geomlops run --resume RUN --interactive), or refuse through the gateway"
            )
        if name not in known:
            listing = ", ".join(sorted(known)) or "none"
            raise ParameterError(
                f"-o {name}: no waiting suspend gate supplies an output {name!r} (they supply: {listing})"
            )
        if known[name] and value not in known[name]:
            raise ParameterError(
                f"-o {name}={value}: not one of its allowed values: {', '.join(known[name])}"
            )
    for gate, param in wanted:
        if str(param["name"]) not in approval.outputs and "default" not in (param.get("valueFrom") or {}):
            raise ParameterError(
                f"output {param['name']!r} of suspend template {gate['name']!r} is supplied by the "
                f"approver and has no default: give it with -o {param['name']}=VALUE"
            )


def gates_of(workflow: Workflow, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Return the workflow's suspend templates (only those named ``names`` when given)."""
    wanted = None if names is None else set(names)
    return [
        t
        for templates in workflow.templates.values()
        for t in templates.values()
        if "suspend" in t and (wanted is None or t["name"] in wanted)
    ]


def supplied_outputs(
    template: Mapping[str, Any], approval: Mapping[str, str] | None, given: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Return the output parameters of a passed suspend gate (``given``: values the approver supplied).

    Raises:
        ValueError: a supplied output has no approval field, default or enum to take.
    """
    values: dict[str, str] = {}
    deciding = decision_output(template)
    for param in (template.get("outputs") or {}).get("parameters") or []:
        name = str(param["name"])
        value_from = param.get("valueFrom") or {}
        key = _APPROVAL_FIELDS.get(name.lower().replace("-", "_"))
        if "value" in param:
            values[name] = to_argo_string(param["value"])
        elif approval is not None and name == deciding:
            values[name] = approval.get("decision", APPROVED)
        elif approval is not None and key is not None and key in approval:
            values[name] = approval[key]
        elif given and name in given:
            values[name] = given[name]
        elif "default" in value_from:
            values[name] = to_argo_string(value_from["default"])
        else:  # Argo's OverrideOutputParametersWithDefault
            raise ValueError(
                f"raw output parameter {name!r} of suspend template {template['name']!r} has not "
                f"been set and does not have a default value (approve with -o {name}=VALUE)"
            )
    return values
