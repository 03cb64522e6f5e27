"""A stand-in for Argo Server on localhost: real HTTP, Argo's request paths and bodies, answers
shaped as Argo's Workflow JSON, every request recorded.

It holds the geomlops WorkflowTemplates (as ``geomlops install`` installs them) and the
Workflows submitted from them. What Argo's controller does is played by :meth:`advance`: it
runs the entry DAG's tasks in order, each succeeding with output values, and stops at a
``suspend`` task, whose node then waits (``Running``, type ``Suspend``) as on Argo.
``set`` supplies a waiting node's outputs (refusing names its template does not supply, as
Argo does) or sets its phase; ``resume`` lets it succeed; ``stop`` fails the run.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from geomlops.gateway.backends.argo import pod_name
from pipelines import PIPELINES, render

NOW = "2026-12-03T08:00:00Z"


def _not_found(name: str) -> tuple[int, dict[str, Any]]:
    return 404, {"code": 5, "message": f'workflows.argoproj.io "{name}" not found'}


@dataclass
class FakeArgo:
    """The server's state: templates, workflows, and the requests it received."""

    namespace: str
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    workflows: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    _count: int = 0

    # --- what Argo's controller does ------------------------------------------------

    def advance(self, name: str) -> None:
        """Run the workflow's tasks in order until a gate waits or every task succeeded."""
        workflow = self.workflows[name]
        template = self.templates[workflow["spec"]["workflowTemplateRef"]["name"]]
        entry = next(t for t in template["spec"]["templates"] if t["name"] == template["spec"]["entrypoint"])
        nodes = workflow["status"]["nodes"]
        for task in entry["dag"]["tasks"]:
            node_name = f"{name}.{task['name']}"
            node = next((n for n in nodes.values() if n["name"] == node_name), None)
            if node is not None and node["phase"] == "Succeeded":
                continue
            if node is not None:  # a gate still waiting, or failed
                return
            target = self._task_template(template, task)
            node = {
                "id": f"{name}-{len(nodes) + 1000}",
                "name": node_name,
                "displayName": task["name"],
                "type": "Suspend" if "suspend" in target else "Pod",
                "phase": "Running",
                "startedAt": f"2026-12-03T08:{len(nodes):02d}:00Z",  # tasks start one after another
                "boundaryID": name,
                **(
                    {"templateRef": task["templateRef"]}
                    if "templateRef" in task
                    else {"templateName": task["template"]}
                ),
            }
            nodes[node["id"]] = node
            if "templateRef" in task:
                key = f"namespaced/{task['templateRef']['name']}/{task['templateRef']['template']}"
                workflow["status"].setdefault("storedTemplates", {})[key] = target
            if node["type"] == "Suspend":
                return
            declared = (target.get("outputs") or {}).get("parameters") or []
            node |= {"phase": "Succeeded", "finishedAt": NOW, "progress": "1/1"}
            node["outputs"] = {
                "parameters": [{"name": p["name"], "value": f"{task['name']}-{p['name']}"} for p in declared]
            }
        workflow["status"] |= {"phase": "Succeeded", "finishedAt": NOW}

    def _task_template(self, template: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
        if "templateRef" in task:
            owner = self.templates[task["templateRef"]["name"]]
            return next(t for t in owner["spec"]["templates"] if t["name"] == task["templateRef"]["template"])
        return next(t for t in template["spec"]["templates"] if t["name"] == task["template"])

    def node(self, name: str, display: str) -> dict[str, Any]:
        """A workflow's node by its display name."""
        return next(
            n for n in self.workflows[name]["status"]["nodes"].values() if n["displayName"] == display
        )

    # --- Argo Server's API --------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        parts = path.strip("/").split("/")  # api v1 workflows NS [NAME [ACTION]]
        if parts[:3] != ["api", "v1", "workflows"] or len(parts) < 4 or parts[3] != self.namespace:
            return 404, {"code": 5, "message": f"no route {path}"}
        rest = parts[4:]
        if method == "POST" and rest == ["submit"]:
            return self._submit(body)
        if method == "GET" and not rest:
            selector = (query.get("listOptions.labelSelector") or [""])[0]
            items = [
                w for w in self.workflows.values() if not selector or selector in w["metadata"]["labels"]
            ]
            return 200, {"metadata": {"resourceVersion": "100"}, "items": items}
        name = rest[0] if rest else ""
        if name not in self.workflows:
            return _not_found(name)
        workflow = self.workflows[name]
        if method == "GET" and len(rest) == 1:
            return 200, workflow
        if method == "GET" and rest[1:] == ["log"]:
            return 200, self._logs(name, (query.get("podName") or [""])[0])
        actions = {"set": self._set, "resume": self._resume, "stop": self._stop}
        if method == "PUT" and len(rest) == 2 and rest[1] in actions:
            return actions[rest[1]](workflow, body)
        return 404, {"code": 5, "message": f"no route {method} {path}"}

    def _submit(self, body: dict[str, Any]) -> tuple[int, Any]:
        template = self.templates.get(body.get("resourceName", ""))
        if body.get("resourceKind") != "WorkflowTemplate" or template is None:
            return 404, {
                "code": 5,
                "message": f'workflowtemplates.argoproj.io "{body.get("resourceName")}" not found',
            }
        options = body.get("submitOptions") or {}
        given = dict(p.split("=", 1) for p in options.get("parameters") or [])
        declared = template["spec"]["arguments"]["parameters"]
        unknown = set(given) - {p["name"] for p in declared}
        if unknown:
            return 400, {"code": 3, "message": f"parameters {sorted(unknown)} not declared by the template"}
        self._count += 1
        name = f"{template['metadata']['name']}-{self._count:05d}"
        labels = dict(pair.split("=", 1) for pair in (options.get("labels") or "").split(",") if pair)
        annotations = dict(
            pair.split("=", 1) for pair in (options.get("annotations") or "").split(",") if pair
        )
        parameters = [
            {"name": p["name"], "value": given.get(p["name"], p.get("value", ""))} for p in declared
        ]
        self.workflows[name] = {
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "uid": f"uid-{self._count}",
                "creationTimestamp": NOW,
                "labels": {"workflows.argoproj.io/workflow-template": template["metadata"]["name"]} | labels,
                "annotations": annotations,
            },
            "spec": {
                "workflowTemplateRef": {"name": template["metadata"]["name"]},
                "arguments": {"parameters": parameters},
            },
            "status": {
                "phase": "Running",
                "startedAt": NOW,
                "progress": "0/1",
                "nodes": {},
                # Argo keeps the template's spec on a run submitted from it
                "storedWorkflowTemplateSpec": template["spec"],
            },
        }
        return 200, self.workflows[name]

    def _gate(self, workflow: dict[str, Any], body: dict[str, Any]) -> dict[str, Any] | None:
        selector = body.get("nodeFieldSelector", "")
        key, _, value = selector.partition("=")
        assert key == "displayName", selector
        return next(
            (
                n
                for n in workflow["status"]["nodes"].values()
                if n["displayName"] == value and n["type"] == "Suspend"
            ),
            None,
        )

    def _set(self, workflow: dict[str, Any], body: dict[str, Any]) -> tuple[int, Any]:
        node = self._gate(workflow, body)
        if node is None or node["phase"] != "Running":
            return 500, {"code": 2, "message": "currently, set only targets suspend nodes"}
        if body.get("outputParameters"):
            values = json.loads(body["outputParameters"])
            ref = node.get("templateRef")
            if ref:
                target = workflow["status"]["storedTemplates"][f"namespaced/{ref['name']}/{ref['template']}"]
            else:
                stored = workflow["status"]["storedWorkflowTemplateSpec"]["templates"]
                target = next(t for t in stored if t["name"] == node["templateName"])
            supplied = {
                p["name"] for p in target["outputs"]["parameters"] if "supplied" in p.get("valueFrom", {})
            }
            for key in values:
                if key not in supplied:
                    return 500, {"code": 2, "message": f"node is not expecting output parameter '{key}'"}
            node["outputs"] = {"parameters": [{"name": k, "value": v} for k, v in values.items()]}
        if body.get("phase"):
            node |= {"phase": body["phase"], "message": body.get("message", ""), "finishedAt": NOW}
            if body["phase"] == "Failed":
                workflow["status"] |= {
                    "phase": "Failed",
                    "message": f"child '{node['id']}' failed",
                    "finishedAt": NOW,
                }
        return 200, workflow

    def _resume(self, workflow: dict[str, Any], body: dict[str, Any]) -> tuple[int, Any]:
        node = self._gate(workflow, body)
        if node is None or node["phase"] != "Running":
            return 500, {"code": 2, "message": "workflow is not suspended"}
        node |= {"phase": "Succeeded", "finishedAt": NOW, "progress": "1/1"}
        return 200, workflow

    def _stop(self, workflow: dict[str, Any], body: dict[str, Any]) -> tuple[int, Any]:
        workflow["status"] |= {
            "phase": "Failed",
            "message": "Stopped with strategy 'Stop'",
            "finishedAt": NOW,
        }
        return 200, workflow

    def _logs(self, name: str, pod: str) -> str:
        lines = []
        for node in self.workflows[name]["status"]["nodes"].values():
            if node["type"] == "Pod" and pod in ("", pod_name(name, node)):
                entry = {"content": f"{node['displayName']} done", "podName": pod_name(name, node)}
                lines.append(json.dumps({"result": entry}))
        return "\n".join(lines) + "\n"


@contextmanager
def fake_argo(namespace: str = "geomlops") -> Iterator[FakeArgo]:
    """The fake Argo Server with every geomlops WorkflowTemplate installed, on a free port."""
    state = FakeArgo(namespace)
    for pipeline in PIPELINES:
        manifest = render(pipeline)
        if manifest["kind"] == "WorkflowTemplate":
            state.templates[manifest["metadata"]["name"]] = manifest

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            query = parse_qs(url.query)
            state.requests.append(
                {
                    "method": self.command,
                    "path": url.path,
                    "query": {k: v[0] for k, v in query.items()},
                    "auth": self.headers.get("Authorization"),
                    "body": body,
                }
            )
            code, answer = state.handle(self.command, url.path, query, body)
            data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
