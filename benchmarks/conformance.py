"""Conformance of the local runner on public example workflows (Argo's and Hera's).

    python benchmarks/conformance.py ARGO_CHECKOUT/examples HERA_CHECKOUT/examples/workflows
    python benchmarks/conformance.py --run --timeout 20 ARGO/examples HERA/examples/workflows \
        --semaphore my-config/workflow=3 --semaphore my-config/template=2

(the two limits are the ConfigMap Argo's synchronization examples ask for in a comment).

Give folders of example YAML files (a local checkout: nothing of theirs is kept here). Every
YAML document that is a Workflow, CronWorkflow, or a WorkflowTemplate/ClusterWorkflowTemplate
with an entrypoint is one example; the WorkflowTemplates, ClusterWorkflowTemplates and
ConfigMaps of all the folders serve ``templateRef`` and semaphore limits (as ``--templates``).

An example is **in scope** when this machine can run what it runs: every container and script
template names a command found here (python, sh, echo...), none relies on an image's
entrypoint, and it is not a Windows example. In scope, the runner's check (the one
``geomlops run`` makes before running anything) **accepts** it or **refuses it by name**
(``UnsupportedFeatureError``, counted per feature); anything else it raises is listed as
**rejected as invalid**, to be judged one by one (Argo may reject it too). An example whose
``templateRef`` names a template none of the folders holds is out of scope (it expects one
installed on the cluster). Each folder is summed up on its own.

With ``--run``, each accepted example runs (``--allow-host-containers``, every suspend gate
approved up front as Argo's ``resume`` would, ``--timeout`` seconds at most, in a process of
its own, ``--jobs`` at once) and is judged on its phase: Argo's examples are expected to
succeed. Not judged: those Argo itself labels ``workflows.argoproj.io/no-test:
expected-failure`` or ``flaky``, those drawing random numbers (coin flips, random exit codes),
and those where a command run inside a shell is missing here (exit code 127). **Correct** is
the expected phase; **wrong** the other; **timed out** ran longer than the limit (examples
labelled ``no-test: duration`` sleep on purpose). Examples that reach the network (curl, wget,
URLs) are out of scope. Only the
phase is judged here; ``tests/conformance`` checks finer results on our own workflows.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from geomlops.argo.runner import Approval, LocalRunner
from geomlops.argo.runner.manifest import load_workflow
from geomlops.argo.runner.synchronization import check_synchronization, parse_limits
from geomlops.argo.template_library import TemplateLibrary, workflow_spec
from geomlops.errors import GeomlopsError, UnsupportedFeatureError

RUNNABLE = ("Workflow", "CronWorkflow", "WorkflowTemplate", "ClusterWorkflowTemplate")
_FEATURE = re.compile(r"does not support (.+?) \(")


def documents(folders: list[Path]) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """Every mapping document of every YAML file under ``folders`` (unreadable files skipped)."""
    for folder in folders:
        # Hera keeps verbatim copies of Argo's examples as *.upstream.yaml: counted once, with Argo's
        files = [p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml")]
        for path in sorted(p for p in files if not p.name.endswith(".upstream.yaml")):
            try:
                docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
            except (yaml.YAMLError, UnicodeDecodeError):
                continue
            for index, doc in enumerate(docs):
                if isinstance(doc, dict):
                    yield path, index, doc


def library_of(folders: list[Path]) -> TemplateLibrary:
    """All templates and ConfigMaps of the folders (a name defined twice: the first wins)."""
    library = TemplateLibrary(paths=list(folders))
    for path, _, doc in documents(folders):
        name = (doc.get("metadata") or {}).get("name")
        if doc.get("kind") == "ConfigMap" and name:
            library.config_maps.setdefault(
                str(name), {str(k): str(v) for k, v in (doc.get("data") or {}).items()}
            )
        elif doc.get("kind") in ("WorkflowTemplate", "ClusterWorkflowTemplate") and name:
            key = (str(doc["kind"]), str(name))
            if key not in library.templates:
                library.templates[key] = doc
                library.origins[key] = path
    return library


def is_example(doc: Mapping[str, Any]) -> bool:
    """A document that runs: a Workflow or CronWorkflow, or a template with an entrypoint."""
    if doc.get("kind") not in RUNNABLE:
        return False
    spec = workflow_spec(doc) or {}
    return doc.get("kind") in ("Workflow", "CronWorkflow") or bool(spec.get("entrypoint"))


def out_of_scope(doc: Mapping[str, Any], library: TemplateLibrary) -> str | None:
    """Why this machine cannot run the example, or None when it can."""
    templates = list((workflow_spec(doc) or {}).get("templates") or [])
    for key in ("templateRef",):
        for template in list(templates):
            calls = list((template.get("dag") or {}).get("tasks") or [])
            calls += [s for g in template.get("steps") or [] for s in (g if isinstance(g, list) else [g])]
            for call in calls:
                ref = call.get(key) if isinstance(call, Mapping) else None
                if isinstance(ref, Mapping):
                    kind = "ClusterWorkflowTemplate" if ref.get("clusterScope") else "WorkflowTemplate"
                    found = library.templates.get((kind, str(ref.get("name"))))
                    templates += list((workflow_spec(found) or {}).get("templates") or []) if found else []
    for template in templates:
        if not isinstance(template, Mapping):
            continue
        if "windows" in json.dumps(template.get("nodeSelector") or {}).lower():
            return "a Windows example"
        for kind in ("container", "script"):
            body = template.get(kind)
            if not isinstance(body, Mapping):
                continue
            command = body.get("command") or []
            if not command:
                return "uses an image's entrypoint (no command)"
            if "hera.workflows.runner" in json.dumps(body.get("args") or []):
                return "runs a Hera runner function whose module is not installed here"
            if re.search(
                r"\b(curl|wget)\b|https?://", json.dumps([command, body.get("args"), body.get("source")])
            ):
                return "reaches the network"
            program = str(command[0])
            if "{{" not in program and shutil.which(program) is None:
                return f"command '{program}' is not on this machine"
    return None


def check(doc: dict[str, Any], library: TemplateLibrary) -> tuple[str, str]:
    """The runner's check: ('accepted', ''), ('refused', feature), ('missing', ref) for a
    templateRef to a template none of the folders holds, or ('error', message)."""
    try:
        workflow = load_workflow(doc, resolver=library, allow_host_containers=True)
        check_synchronization(workflow, library.semaphore_limits())
    except UnsupportedFeatureError as err:
        match = _FEATURE.search(str(err))
        return "refused", match.group(1) if match else str(err)
    except GeomlopsError as err:
        message = str(err).splitlines()[0]
        return ("missing" if " not found: no " in message else "error"), message
    return "accepted", ""


def expected_phase(doc: Mapping[str, Any]) -> tuple[str | None, str]:
    """The phase Argo gives, or None and why it is not judged: Argo's own examples label it an
    expected failure or flaky, or it draws random numbers (coin flips, random exit codes)."""
    labels = (doc.get("metadata") or {}).get("labels") or {}
    label = labels.get("workflows.argoproj.io/no-test")
    if label in ("expected-failure", "flaky"):
        return None, f"labelled no-test: {label}"
    if re.search(r"\brandom\b|\$RANDOM", json.dumps(doc)):
        return None, "random outcome"
    return "Succeeded", ""


def run_one(source: str, index: int, library_file: str) -> None:
    """Run one example in this process and print its phase as JSON (the ``--one`` mode)."""
    doc = list(yaml.safe_load_all(Path(source).read_text(encoding="utf-8")))[index]
    library = TemplateLibrary.load([library_file])
    with tempfile.TemporaryDirectory() as runs:
        runner = LocalRunner(
            Path(runs),
            allow_host_containers=True,
            template_resolver=library,
            semaphores=library.semaphore_limits(),
            approval=Approval("conformance", "approved up front, as argo resume"),
            progress=False,
        )
        try:
            summary = runner.run(doc)
            print(json.dumps({"phase": summary.status, "message": summary.message.splitlines()[:1]}))
        except GeomlopsError as err:
            print(json.dumps({"phase": "Refused", "message": [str(err)]}))


def write_library(library: TemplateLibrary, path: Path) -> None:
    """Write every template and ConfigMap of ``library`` to one multi-document file."""
    config_maps = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
        for name, data in library.config_maps.items()
    ]
    path.write_text(yaml.safe_dump_all([*library.templates.values(), *config_maps]), encoding="utf-8")


def run_isolated(path: Path, index: int, library_file: Path, timeout: float) -> dict[str, Any]:
    """Run one example in a process of its own (its own session, killed whole at the limit)."""
    argv = [sys.executable, __file__, "--one", str(path), str(index), str(library_file)]
    with tempfile.TemporaryDirectory() as cwd:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            # a work folder of its own: nothing of this machine's geomlops settings is used
            env={**os.environ, "GEOMLOPS_HOME": cwd},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            out, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return {"phase": "TimedOut", "message": []}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"phase": "Crashed", "message": out.splitlines()[-1:]}


def judge(doc: Mapping[str, Any], result: Mapping[str, Any]) -> str:
    """Say how a run compares with Argo's phase."""
    expected, why = expected_phase(doc)
    phase = result["phase"]
    if phase == "TimedOut":
        return "timed out"
    if "exit code 127" in " ".join(result["message"]):
        return "not judged: a command it runs is not on this machine (exit code 127)"
    if "supplied by the approver" in " ".join(result["message"]):
        return "not judged: an approver must supply a value (Argo's UI asks for it)"
    if expected is None:
        return f"not judged: {why}"
    return "correct" if phase == expected else "wrong"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="+", type=Path, help="folders of example YAML files")
    parser.add_argument("--run", action="store_true", help="run every accepted example")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per run (default 20)")
    parser.add_argument("--jobs", type=int, default=2, help="examples run at once (default 2)")
    parser.add_argument("--verbose", action="store_true", help="one line per example")
    parser.add_argument(
        "--semaphore",
        action="append",
        default=[],
        metavar="CONFIGMAP/KEY=LIMIT",
        help="a semaphore limit the examples expect a ConfigMap on the cluster to give",
    )
    args = parser.parse_args()
    library = library_of(args.folders)
    for name, limit in parse_limits(args.semaphore).items():
        config_map, key = name.split("/")
        library.config_maps.setdefault(config_map, {})[key] = str(limit)
    with tempfile.TemporaryDirectory() as scratch:
        args.library_file = Path(scratch) / "library.yaml"
        write_library(library, args.library_file)
        for folder in args.folders:
            summarise(folder, library, args)


def summarise(folder: Path, library: TemplateLibrary, args: argparse.Namespace) -> None:
    """Check (and with ``--run`` run) the examples of one folder; print the figures."""
    counts: collections.Counter[str] = collections.Counter()
    refused: collections.Counter[str] = collections.Counter()
    scope: collections.Counter[str] = collections.Counter()
    details: list[str] = []
    accepted: list[tuple[str, Path, int, dict[str, Any]]] = []
    began = time.monotonic()
    for path, index, doc in documents([folder]):
        if not is_example(doc):
            continue
        label = f"{path.relative_to(folder)}#{index}"
        counts["examples"] += 1
        reason = out_of_scope(doc, library)
        if reason:
            scope[re.sub(r"'.*'", "X", reason)] += 1
            details.append(f"out of scope  {label}: {reason}")
            continue
        verdict, why = check(doc, library)
        if verdict == "missing":
            scope["references a template installed elsewhere (not in the folders)"] += 1
            details.append(f"out of scope  {label}: {why}")
            continue
        counts["in scope"] += 1
        if verdict == "refused":
            counts["refused by name"] += 1
            refused[why] += 1
            details.append(f"refused       {label}: {why}")
        elif verdict == "error":
            counts["rejected as invalid"] += 1
            details.append(f"REJECTED      {label}: {why}")
        else:
            counts["accepted"] += 1
            accepted.append((label, path, index, doc))
    outcomes: collections.Counter[str] = collections.Counter()
    if args.run:
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            results = pool.map(
                lambda item: run_isolated(item[1], item[2], args.library_file, args.timeout), accepted
            )
            for (label, _, _, doc), result in zip(accepted, results, strict=True):
                outcome = judge(doc, result)
                outcomes[outcome] += 1
                message = " ".join(result["message"])[:200]
                details.append(
                    f"{outcome.upper() if outcome == 'wrong' else outcome:13} {label}: "
                    f"{result['phase']} {message}"
                )
    if args.verbose:
        print("\n".join(details))
    print(f"\n== {folder}\nexamples: {counts['examples']} ({time.monotonic() - began:.0f} s)")
    for reason, n in scope.most_common():
        print(f"  out of scope: {n:3}  {reason}")
    print(f"in scope: {counts['in scope']}")
    print(f"  accepted by the runner's check: {counts['accepted']}")
    for outcome, n in sorted(outcomes.items()):
        print(f"    {n:3}  {outcome}")
    print(f"  refused by name: {counts['refused by name']}")
    for feature, n in refused.most_common():
        print(f"    {n:3}  {feature}")
    print(f"  rejected as invalid (other errors; judge each): {counts['rejected as invalid']}")
    for line in details:
        if line.startswith(("REJECTED", "WRONG", "timed out")):
            print(f"    {line}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        run_one(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()
