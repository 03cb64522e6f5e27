"""Suspend templates: approval gates and timed waits.

A ``suspend`` with a ``duration`` waits and goes on. Without one it is an approval gate:
an approval given to the runner up front passes it (who, why and when go in the node's
state); with ``interactive`` the runner asks at the terminal; otherwise the node, and the
run, stop as ``Suspended`` until ``resume`` is called with an approval. Output parameters
with ``valueFrom.supplied`` named ``approver`` (or ``approved_by``), ``reason``,
``approved_at`` or ``override`` receive the approval's fields; others take their ``default``
(or first ``enum`` value).
"""

from __future__ import annotations

import getpass
import threading
import time
from collections.abc import Mapping
from typing import Any

from geomlops.errors import GeomlopsError

from .context import RunContext
from .model import ERROR, FAILED, RUNNING, SUCCEEDED, SUSPENDED, Approval, NodeState, now_iso
from .outcome import Outcome
from .retry import parse_duration
from .substitute import UnresolvedVariableError, substitute_all, to_argo_string

#: the approval question; ``y`` approves, ``n`` rejects (the run fails), Enter leaves it waiting
APPROVE_QUESTION = "Approve? [y/n, Enter: leave it waiting] "
_PROMPT_LOCK = threading.Lock()  # one question at a time, even from parallel branches
_APPROVAL_FIELDS = {"approver": "approver", "approved_by": "approver", "reason": "reason"}
_APPROVAL_FIELDS |= {"approved_at": "at", "override": "override"}


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
        approval = answer
        node.approval = _record(approval, "prompt")
    else:
        engine.reporter.waiting(name, "is waiting for approval; resume the run with an approval")
        _show_inputs(engine, template, inputs)
        return engine.close(node, SUSPENDED, "waiting for approval")
    try:
        node.outputs = supplied_outputs(template, node.approval)
    except ValueError as err:
        return engine.close(node, ERROR, str(err))
    if approval is not None:
        engine.reporter.line(f"✓ {name} approved by {approval.approver}: {approval.reason}")
    return engine.close(node, SUCCEEDED, "")


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


def _ask(
    engine: RunContext, name: str, template: Mapping[str, Any], node_inputs: Mapping[str, str]
) -> Approval | str | None:
    """Ask for approval: an Approval, a rejection message (``n``), or None to leave the gate
    waiting (an empty answer, or input has ended); any other answer is asked again."""
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
                    return f"not approved at the prompt (answer {answer!r})"
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
        except EOFError:
            return None
    check = engine.options.approver_check
    if check is not None:
        try:
            approver = check(approver)
        except GeomlopsError as err:
            return f"not approved at the prompt: {err}"
    return Approval(approver, reason, override)


def supplied_outputs(template: Mapping[str, Any], approval: Mapping[str, str] | None) -> dict[str, str]:
    """Return the output parameters of a passed suspend gate.

    Raises:
        ValueError: a supplied output has no approval field, default or enum to take.
    """
    values: dict[str, str] = {}
    for param in (template.get("outputs") or {}).get("parameters") or []:
        name = str(param["name"])
        value_from = param.get("valueFrom") or {}
        key = _APPROVAL_FIELDS.get(name.lower().replace("-", "_"))
        if "value" in param:
            values[name] = to_argo_string(param["value"])
        elif approval is not None and key is not None and key in approval:
            values[name] = approval[key]
        elif "default" in value_from:
            values[name] = to_argo_string(value_from["default"])
        elif param.get("enum"):
            values[name] = to_argo_string(param["enum"][0])
        else:
            raise ValueError(
                f"output parameter {name!r} of suspend template {template['name']!r} needs a "
                "supplied value the local runner cannot ask for; give it valueFrom.default"
            )
    return values
