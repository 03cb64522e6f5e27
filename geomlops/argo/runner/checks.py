"""Static checks of a loaded workflow, done before anything runs (as Argo's validator does).

Every call (DAG task or step) must name an existing template and pass the inputs it
requires; DAG dependencies must exist and form no cycle; every ``{{...}}`` variable under an
Argo prefix must be one Argo can resolve at that place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from geomlops.argo.dag import ancestors, dag_dependencies
from geomlops.errors import ManifestError

from .substitute import is_argo_variable, variables_in
from .workflow import Workflow

_WORKFLOW_VARS = {
    "name", "namespace", "uid", "status", "failures", "duration", "creationTimestamp",
    "serviceAccountName", "mainEntrypoint", "priority", "scheduledTime", "parameters",
    "parameters.json", "labels.json", "annotations.json",
}  # fmt: skip
_WORKFLOW_PREFIXES = (
    "labels.",
    "annotations.",
    "creationTimestamp.",
    "outputs.parameters.",
    "outputs.artifacts.",
)
_NODE_ATTRS = {"status", "id", "startedAt", "finishedAt", "exitCode", "ip", "outputs.result"}
_NODE_ATTRS |= {"outputs.parameters"}


def _steps_groups(template: Mapping[str, Any]) -> list[list[Mapping[str, Any]]]:
    groups = template.get("steps") or []
    if not isinstance(groups, list):
        raise ManifestError(f"steps of template {template.get('name')!r} must be a list")
    return [g if isinstance(g, list) else [g] for g in groups]


def check_workflow(workflow: Workflow) -> None:
    """Run every static check on ``workflow``.

    Raises:
        ManifestError: naming the template, task and problem.
    """
    declared = {str(p.get("name")) for p in workflow.declared_parameters}
    globals_out = _global_output_names(workflow)
    entry = workflow.template(None, workflow.entrypoint)
    _check_required_inputs(entry, set(declared), f"entrypoint {workflow.entrypoint!r}")
    if workflow.spec.get("onExit"):
        handler = workflow.template(None, str(workflow.spec["onExit"]))
        _check_required_inputs(handler, set(declared), f"exit handler {workflow.spec['onExit']!r}")
    for source, templates in workflow.templates.items():
        params = declared if source is None else None
        for template in templates.values():
            checker = _VariableChecker(template, params, globals_out)
            if "dag" in template:
                _check_dag(workflow, source, template, checker)
            elif "steps" in template:
                _check_steps(workflow, source, template, checker)
            else:
                if "script" in template and not (template["script"] or {}).get("command"):
                    raise ManifestError(f"script template {template['name']!r} has no command")
                if "container" in template and not (template["container"] or {}).get("command"):
                    raise ManifestError(
                        f"container template {template['name']!r} has no command (the local "
                        "runner cannot use an image's entrypoint)"
                    )
                checker.check(template, f"template {template['name']!r}", leaf=True)


def _global_output_names(workflow: Workflow) -> set[str]:
    names: set[str] = set()
    for templates in workflow.templates.values():
        for template in templates.values():
            for param in (template.get("outputs") or {}).get("parameters") or []:
                if param.get("globalName"):
                    names.add(str(param["globalName"]))
    return names


def _check_call(workflow: Workflow, source: str | None, call: Mapping[str, Any], where: str) -> None:
    callee_source, callee_name = workflow.resolve_call(source, call)
    try:
        callee = workflow.template(callee_source, callee_name)
    except ManifestError as err:
        raise ManifestError(f"{where}: {err}") from err
    given = {str(p.get("name")) for p in (call.get("arguments") or {}).get("parameters") or []}
    _check_required_inputs(callee, given, where)


def _check_required_inputs(template: Mapping[str, Any], given: set[str], where: str) -> None:
    for param in (template.get("inputs") or {}).get("parameters") or []:
        if param.get("name") not in given and "value" not in param and "default" not in param:
            raise ManifestError(
                f"{where} does not pass input parameter {param.get('name')!r} that template "
                f"{template.get('name')!r} requires"
            )


def _check_dag(
    workflow: Workflow, source: str | None, template: Mapping[str, Any], checker: _VariableChecker
) -> None:
    graph = dag_dependencies(template)
    tname = template["name"]
    target = str((template.get("dag") or {}).get("target") or "")
    checker.check(target, f"dag.target of template {tname!r}")
    for name in target.replace(",", " ").split():
        # as Argo's validateDAGTargets: a parameter is checked once substituted, at run time
        if name not in graph and "{{" not in name:
            raise ManifestError(f"dag.target of template {tname!r} names unknown task {name!r}")
    for task in template["dag"].get("tasks") or []:
        where = f"task {task['name']!r} of template {tname!r}"
        _check_call(workflow, source, task, where)
        checker.check(task, where, nodes=("tasks", ancestors(graph, task["name"])), loop=_loop(task))
    rest = {k: v for k, v in template.items() if k != "dag"}
    checker.check(rest, f"template {tname!r}", nodes=("tasks", set(graph)))


def _check_steps(
    workflow: Workflow, source: str | None, template: Mapping[str, Any], checker: _VariableChecker
) -> None:
    tname = template["name"]
    earlier: set[str] = set()
    for group in _steps_groups(template):
        names = set()
        for step in group:
            where = f"step {step.get('name')!r} of template {tname!r}"
            if not step.get("name"):
                raise ManifestError(f"a step of template {tname!r} has no name")
            _check_call(workflow, source, step, where)
            checker.check(step, where, nodes=("steps", earlier), loop=_loop(step))
            names.add(str(step["name"]))
        earlier |= names
    rest = {k: v for k, v in template.items() if k != "steps"}
    checker.check(rest, f"template {tname!r}", nodes=("steps", earlier))


def _hint(tag: str, loop: bool) -> str:
    if tag.startswith("tasks."):
        return " (a task may only use the outputs of tasks it depends on, directly or not)"
    if tag.startswith("steps."):
        return " (a step may only use the outputs of steps in earlier groups)"
    if tag.startswith("item") and not loop:
        return " (item exists only in tasks with withItems, withParam or withSequence)"
    if tag.startswith(("inputs.", "outputs.")):
        return " (not declared by the template)"
    if tag.startswith("workflow.parameters."):
        return " (not a parameter the workflow declares)"
    return ""


def _loop(call: Mapping[str, Any]) -> bool:
    return any(k in call for k in ("withItems", "withParam", "withSequence"))


class _VariableChecker:
    """Checks the ``{{...}}`` variables one template may use."""

    def __init__(self, template: Mapping[str, Any], params: set[str] | None, globals_out: set[str]) -> None:
        self.name = template.get("name")
        self.inputs = {str(p["name"]) for p in (template.get("inputs") or {}).get("parameters") or []}
        self.input_artifacts = {str(a["name"]) for a in (template.get("inputs") or {}).get("artifacts") or []}
        outputs = (template.get("outputs") or {}).get("parameters") or []
        self.output_paths = {str(p["name"]) for p in outputs if (p.get("valueFrom") or {}).get("path")}
        artifacts = (template.get("outputs") or {}).get("artifacts") or []
        self.output_artifacts = {str(a["name"]) for a in artifacts if "path" in a}
        self.params = params
        self.globals_out = globals_out

    def check(
        self,
        data: Any,
        where: str,
        *,
        leaf: bool = False,
        nodes: tuple[str, Iterable[str]] | None = None,
        loop: bool = False,
    ) -> None:
        for tag in variables_in(data):
            if is_argo_variable(tag) and not self._allowed(tag, leaf, nodes, loop):
                raise ManifestError(f"{where}: unknown variable '{{{{{tag}}}}}'{_hint(tag, loop)}")

    def _allowed(self, tag: str, leaf: bool, nodes: tuple[str, Iterable[str]] | None, loop: bool) -> bool:
        if tag == "item" or tag.startswith("item."):
            return loop
        if tag == "inputs.parameters":
            return True
        if tag.startswith("inputs.parameters."):
            return tag.removeprefix("inputs.parameters.") in self.inputs
        if tag.startswith("inputs.artifacts."):
            return tag.removeprefix("inputs.artifacts.").removesuffix(".path") in self.input_artifacts
        if tag.startswith("workflow."):
            return self._workflow_var(tag.removeprefix("workflow."))
        if tag in ("pod.name", "node.name"):
            return leaf
        if tag.startswith("outputs.parameters.") and tag.endswith(".path"):
            return leaf and tag[len("outputs.parameters.") : -len(".path")] in self.output_paths
        if tag.startswith("outputs.artifacts.") and tag.endswith(".path"):
            return leaf and tag[len("outputs.artifacts.") : -len(".path")] in self.output_artifacts
        if nodes is not None and tag.startswith(nodes[0] + "."):
            name, _, attr = tag[len(nodes[0]) + 1 :].partition(".")
            known = attr in _NODE_ATTRS or attr.startswith(("outputs.parameters.", "outputs.artifacts."))
            return name in set(nodes[1]) and known
        return False

    def _workflow_var(self, var: str) -> bool:
        if var.startswith("parameters.") and var not in _WORKFLOW_VARS:
            return self.params is None or var.removeprefix("parameters.") in self.params
        if var.startswith("outputs.parameters."):
            return var.removeprefix("outputs.parameters.") in self.globals_out
        return var in _WORKFLOW_VARS or var.startswith(_WORKFLOW_PREFIXES)
