"""The Argo Server backend: runs in a cluster, through Hera's ``WorkflowsService``.

A run is a Workflow submitted from the installed WorkflowTemplate of its pipeline
(``POST /api/v1/workflows/{ns}/submit``, ``resourceKind: WorkflowTemplate``), labelled with
the pipeline and annotated with who submitted it; its name is the run id. The approval gate is
a ``suspend`` node, found by its phase (``Running``) and type (``Suspend``): approving it sets
the node's supplied output parameters (``PUT …/set`` with ``nodeFieldSelector:
displayName=<gate>`` and ``outputParameters``, what ``argo node set`` sends) and resumes that
node (``PUT …/resume``), so the approver, reason, override and time reach the promotion step as
they do on one machine; refusing it sets the node ``Failed`` with who refused and why. Logs are
Argo's log stream (one JSON entry per line), of the whole run or of one task's pod.

Server, namespace and token come from the core settings (``GEOMLOPS_ARGO_SERVER``,
``GEOMLOPS_ARGO_NAMESPACE``, ``GEOMLOPS_ARGO_TOKEN``); the token never appears in an answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import urljoin

import requests
from hera.exceptions import HeraException, NotFound
from hera.workflows import WorkflowsService
from hera.workflows.models import (
    SubmitOpts,
    WorkflowResumeRequest,
    WorkflowSetRequest,
    WorkflowStopRequest,
    WorkflowSubmitRequest,
)

from geomlops.argo.runner.suspend import decision_output
from geomlops.errors import ConfigurationError, ParameterError
from geomlops.gateway.backends.base import (
    FINISHED_PHASES,
    Approval,
    BackendUnavailableError,
    GateNotWaitingError,
    Phase,
    RunInfo,
    RunNotFoundError,
    RunStateError,
    TaskInfo,
)
from geomlops.settings import Settings
from pipelines._naming import PIPELINE_LABEL  # every run the gateway submits carries it

#: annotation naming the authenticated caller who submitted the run
SUBMITTED_BY = "geomlops.io/submitted-by"
_TASK_TYPES = {"Pod", "Suspend", "Skipped"}
_T = TypeVar("_T")


@lru_cache(maxsize=1)
def _template_names() -> dict[str, str]:
    """Pipeline name → the name of its installed WorkflowTemplate (with the release in it)."""
    from pipelines import PIPELINES, render

    return {name: str(render(name)["metadata"]["name"]) for name in PIPELINES}


def pod_name(workflow: str, node: Mapping[str, Any]) -> str:
    """The pod Argo runs a node in (its default pod naming, ``POD_NAMES=v2``): the workflow and
    template names and the FNV-1a hash of the node's name."""
    name = str(node.get("name", ""))
    if name == workflow:
        return workflow
    template = node.get("templateName") or (node.get("templateRef") or {}).get("template", "")
    prefix = workflow if ".inline" in name else f"{workflow}-{template}"
    prefix = prefix[: 253 - 10 - 1]
    digest = 0x811C9DC5
    for byte in name.encode():
        digest = ((digest ^ byte) * 0x01000193) & 0xFFFFFFFF
    return f"{prefix}-{digest}"


class ArgoBackend:
    """Runs pipelines on Argo Workflows through Argo Server's API.

    Args:
        settings: the core settings (Argo Server URL, namespace, token).
        service: a ready ``WorkflowsService`` (default: one built from ``settings``).

    Raises:
        ConfigurationError: no Argo Server is configured.
    """

    name = "argo"

    def __init__(self, settings: Settings, service: WorkflowsService | None = None) -> None:
        if service is None:
            if not settings.argo_server:
                raise ConfigurationError(
                    "GEOMLOPS_ARGO_SERVER: not set; the argo backend needs Argo Server's URL"
                )
            host = settings.argo_server.rstrip("/") + "/"
            service = WorkflowsService(
                host=host, token=settings.argo_token, namespace=settings.argo_namespace
            )
        self.service = service
        self.namespace = settings.argo_namespace

    # --- RunBackend -------------------------------------------------------------------

    def submit(self, pipeline: str, parameters: Mapping[str, str], *, submitted_by: str) -> RunInfo:
        """Submit a Workflow from ``pipeline``'s installed WorkflowTemplate."""
        template = _template_names().get(pipeline)
        if template is None:
            raise ParameterError(
                f"pipeline: unknown '{pipeline}' (pipelines: {', '.join(sorted(_template_names()))})"
            )
        request = WorkflowSubmitRequest(
            namespace=self.namespace,
            resource_kind="WorkflowTemplate",
            resource_name=template,
            submit_options=SubmitOpts(
                parameters=[f"{k}={v}" for k, v in parameters.items()],
                labels=f"{PIPELINE_LABEL}={pipeline}",
                # Argo splits annotations on commas
                annotations=f"{SUBMITTED_BY}={submitted_by.replace(',', ' ')}",
            ),
        )
        return run_info(self._call(lambda: self.service.submit_workflow(request, namespace=self.namespace)))

    def get(self, run_id: str) -> RunInfo:
        """The Workflow ``run_id`` with every task."""
        return run_info(self._workflow(run_id))

    def list(self) -> list[RunInfo]:
        """The gateway's runs in the namespace (those labelled with a pipeline), newest first."""
        found = self._call(
            lambda: self.service.list_workflows(namespace=self.namespace, label_selector=PIPELINE_LABEL)
        )
        runs = [run_info(w, with_tasks=False) for w in _dump(found).get("items") or []]
        return sorted(runs, key=lambda r: r.started or "", reverse=True)

    def logs(self, run_id: str, task: str | None = None) -> str:
        """Argo's log lines of the run (``POD: line``), or those of one task's pod."""
        workflow = self._workflow(run_id)
        params: dict[str, str] = {"logOptions.container": "main"}
        if task is not None:
            node = _task_node(workflow, task)
            if node is None:
                raise RunNotFoundError(f"run {run_id} has no task '{task}'")
            params["podName"] = pod_name(run_id, node)
        url = urljoin(self.service.host, f"api/v1/workflows/{self.namespace}/{run_id}/log")
        try:
            answer = self.service.session.get(
                url,
                params=params,
                headers={"Authorization": self.service.token or ""},
                verify=self.service.verify_ssl,
                timeout=60,
            )
        except requests.RequestException as err:
            raise BackendUnavailableError(
                f"Argo Server at {self.service.host}: {type(err).__name__}"
            ) from err
        if not answer.ok:
            raise BackendUnavailableError(f"Argo Server answered {answer.status_code} to the log request")
        lines = []
        for raw in answer.text.splitlines():
            if raw.strip():
                entry = json.loads(raw).get("result") or {}
                lines.append(f"{entry.get('podName', '')}: {entry.get('content', '')}")
        return "\n".join(lines) + ("\n" if lines else "")

    def stop(self, run_id: str) -> RunInfo:
        """Stop the Workflow (Argo runs its exit handlers)."""
        run = self.get(run_id)
        if run.phase in FINISHED_PHASES:
            raise RunStateError(f"run {run_id} has already finished ({run.phase.value}); nothing to stop")
        request = WorkflowStopRequest(name=run_id, namespace=self.namespace)
        return run_info(
            self._call(lambda: self.service.stop_workflow(run_id, request, namespace=self.namespace))
        )

    def approve(
        self,
        run_id: str,
        *,
        approver: str,
        reason: str,
        override: bool = False,
        outputs: Mapping[str, str] | None = None,
    ) -> RunInfo:
        """Supply the waiting gate's outputs (``set``), then resume that node."""
        return self._pass_gate(run_id, approver, reason, override, outputs, "approved")

    def _pass_gate(
        self,
        run_id: str,
        approver: str,
        reason: str,
        override: bool,
        outputs: Mapping[str, str] | None,
        decision: str,
    ) -> RunInfo:
        workflow = self._workflow(run_id)
        gate = _waiting_gate(workflow, run_id)
        deciding = _decision_output(workflow, gate)
        if deciding is not None and deciding in (outputs or {}):
            raise ParameterError(
                f"outputs: '{deciding}' is not given with an approval (refuse the run instead)"
            )
        values = {
            "approver": approver,
            "reason": reason,
            "override": "true" if override else "false",
            "approved_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        } | dict(outputs or {})
        if deciding is not None:  # the person's decision, for the workflow to carry out or record
            values[deciding] = decision
        declared = _supplied_outputs(workflow, gate)
        if declared is not None:
            unknown = sorted(set(outputs or {}) - declared)
            if unknown:
                raise ParameterError(
                    f"outputs: the gate '{gate['displayName']}' supplies no {', '.join(unknown)}"
                )
            values = {k: v for k, v in values.items() if k in declared}
        selector = f"displayName={gate['displayName']}"
        set_request = WorkflowSetRequest(
            name=run_id,
            namespace=self.namespace,
            node_field_selector=selector,
            output_parameters=json.dumps(values),
        )
        self._call(lambda: self.service.set_workflow(run_id, set_request, namespace=self.namespace))
        resume = WorkflowResumeRequest(name=run_id, namespace=self.namespace, node_field_selector=selector)
        return run_info(
            self._call(lambda: self.service.resume_workflow(run_id, resume, namespace=self.namespace))
        )

    def refuse(self, run_id: str, *, approver: str, reason: str) -> RunInfo:
        """A gate that supplies a ``decision`` is passed with ``decision: refused``, who and why,
        for the workflow to record the refusal (the promotion's audit trail); any other waiting
        gate is set ``Failed`` with who refused and why. Either way the run then fails."""
        workflow = self._workflow(run_id)
        gate = _waiting_gate(workflow, run_id)
        if _decision_output(workflow, gate) is not None:
            return self._pass_gate(run_id, approver, reason, False, None, "refused")
        request = WorkflowSetRequest(
            name=run_id,
            namespace=self.namespace,
            node_field_selector=f"displayName={gate['displayName']}",
            phase="Failed",
            message=f"refused by {approver}: {reason}",
        )
        return run_info(
            self._call(lambda: self.service.set_workflow(run_id, request, namespace=self.namespace))
        )

    # --- internals --------------------------------------------------------------------

    def _workflow(self, run_id: str) -> dict[str, Any]:
        try:
            return _dump(self._call(lambda: self.service.get_workflow(run_id, namespace=self.namespace)))
        except NotFound as err:
            raise RunNotFoundError(f"no run '{run_id}' in namespace {self.namespace}") from err

    def _call(self, action: Callable[[], _T]) -> _T:
        try:
            return action()
        except NotFound:
            raise
        except HeraException as err:
            if getattr(err, "status_code", 0) in (400, 409):
                raise ParameterError(f"Argo Server refused the request: {err}") from err
            raise BackendUnavailableError(f"Argo Server: {err}") from err
        except requests.RequestException as err:
            raise BackendUnavailableError(
                f"Argo Server at {self.service.host} cannot be reached ({type(err).__name__})"
            ) from err


def _dump(model: Any) -> dict[str, Any]:
    if isinstance(model, dict):
        return model
    data: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data


def _nodes(workflow: Mapping[str, Any]) -> list[dict[str, Any]]:
    nodes = ((workflow.get("status") or {}).get("nodes") or {}).values()
    return sorted(nodes, key=lambda n: (n.get("startedAt") or "~", n.get("displayName") or ""))


def _task_node(workflow: Mapping[str, Any], task: str) -> dict[str, Any] | None:
    return next(
        (n for n in _nodes(workflow) if n.get("displayName") == task and n.get("type") in _TASK_TYPES), None
    )


def _waiting_gate(workflow: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    for node in _nodes(workflow):
        if node.get("type") == "Suspend" and node.get("phase") == "Running":
            return node
    raise GateNotWaitingError(f"run {run_id} is not waiting at an approval gate")


def _gate_template(workflow: Mapping[str, Any], gate: Mapping[str, Any]) -> dict[str, Any] | None:
    """The waiting gate's template, when the run shows it."""
    status = workflow.get("status") or {}
    ref = gate.get("templateRef") or {}
    if ref:
        found = (status.get("storedTemplates") or {}).get(
            f"namespaced/{ref.get('name')}/{ref.get('template')}"
        )
        return dict(found) if isinstance(found, Mapping) else None
    spec = status.get("storedWorkflowTemplateSpec") or workflow.get("spec") or {}
    return next((t for t in spec.get("templates") or [] if t.get("name") == gate.get("templateName")), None)


def _decision_output(workflow: Mapping[str, Any], gate: Mapping[str, Any]) -> str | None:
    """The gate's output that carries a person's decision (``approved`` | ``refused``), as the
    local runner finds it (:func:`geomlops.argo.runner.suspend.decision_output`)."""
    template = _gate_template(workflow, gate)
    return decision_output(template) if template is not None else None


def _supplied_outputs(workflow: Mapping[str, Any], gate: Mapping[str, Any]) -> set[str] | None:
    """The gate template's output parameters a person supplies, when the run shows its template."""
    template = _gate_template(workflow, gate)
    if template is None:
        return None
    params = (template.get("outputs") or {}).get("parameters") or []
    return {str(p["name"]) for p in params if "supplied" in (p.get("valueFrom") or {})}


def _phase(value: str | None) -> Phase:
    try:
        return Phase(value or "Pending")
    except ValueError:
        return Phase.ERROR


def run_info(workflow: Any, with_tasks: bool = True) -> RunInfo:
    """A Workflow (Argo Server's JSON, or Hera's model of it) as the gateway reports a run."""
    data = _dump(workflow)
    meta, spec, status = data.get("metadata") or {}, data.get("spec") or {}, data.get("status") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    template = (spec.get("workflowTemplateRef") or {}).get("name") or labels.get(
        "workflows.argoproj.io/workflow-template", ""
    )
    pipeline = labels.get(PIPELINE_LABEL) or next(
        (p for p, t in _template_names().items() if t == template), template
    )
    tasks = [_task(n) for n in _nodes(data) if n.get("type") in _TASK_TYPES]
    gate = next((t.name for t in tasks if t.type == "Suspend" and t.phase == Phase.RUNNING), None)
    phase = _phase(status.get("phase"))
    if gate is not None and phase == Phase.RUNNING:
        phase = Phase.SUSPENDED
    pods = [t for t in tasks if t.type == "Pod"]
    return RunInfo(
        run_id=str(meta.get("name", "")),
        pipeline=pipeline,
        phase=phase,
        started=status.get("startedAt") or meta.get("creationTimestamp"),
        finished=status.get("finishedAt"),
        message=status.get("message") or ("waiting for approval" if gate else ""),
        submitted_by=annotations.get(SUBMITTED_BY, ""),
        parameters={
            p["name"]: str(p.get("value", "")) for p in (spec.get("arguments") or {}).get("parameters") or []
        },
        progress=status.get("progress") or f"{sum(t.phase in FINISHED_PHASES for t in pods)}/{len(pods)}",
        tasks=tasks if with_tasks else [],
        outputs={t.name: t.outputs for t in tasks if t.phase == Phase.SUCCEEDED and t.outputs},
        waiting_gate=gate,
    )


def _task(node: Mapping[str, Any]) -> TaskInfo:
    template = node.get("templateName") or (node.get("templateRef") or {}).get("template", "")
    outputs = (node.get("outputs") or {}).get("parameters") or []
    phase = _phase(node.get("phase"))
    values = {str(p["name"]): str(p.get("value", "")) for p in outputs if "value" in p}
    return TaskInfo(
        name=str(node.get("displayName") or node.get("name", "")),
        template=str(template),
        type=str(node.get("type", "")),
        phase=phase,
        started=node.get("startedAt"),
        finished=node.get("finishedAt"),
        progress=node.get("progress") or ("1/1" if phase in FINISHED_PHASES else "0/1"),
        message=node.get("message") or "",
        outputs=values,
        attempts=1 if node.get("startedAt") else 0,
        approval=_approval(node, values),
    )


def _approval(node: Mapping[str, Any], values: Mapping[str, str]) -> Approval | None:
    """The decision a passed gate holds in the outputs :meth:`ArgoBackend.approve` set."""
    if node.get("type") != "Suspend" or not values.get("approver"):
        return None
    return Approval(
        approver=values["approver"],
        reason=values.get("reason", ""),
        at=values.get("approved_at"),
        override=values.get("override") == "true",
        decision="refused" if values.get("decision") == "refused" else "approved",
    )
