"""Images on one machine: a stand-in environment per image, and a container's workingDir.

A model's image runs its own interpreter on Argo; locally ``image_environment`` gives the
process of that image its own environment (here: a folder whose ``python`` prints who it is),
and geomlops' interpreter is not swapped in for it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from runner_fixtures.build import dag, script, task, workflow

from geomlops.argo.runner import LocalRunner
from geomlops.errors import GeomlopsError

MODEL_IMAGE = "registry.example/model:1"


def make_runner(tmp_path: Path, **options: Any) -> LocalRunner:
    options.setdefault("progress", False)
    return LocalRunner(tmp_path / "runs", **options)


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    """A folder with a ``python`` of its own, as an image's environment would have."""
    bin_dir = tmp_path / "model-env" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\necho "model-env python"\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    return bin_dir


def resolver(bin_dir: Path, seen: list[str]) -> Any:
    def image_environment(image: str, env: Mapping[str, str]) -> dict[str, str] | None:
        seen.append(image)
        if image != MODEL_IMAGE:
            return None
        return {**env, "PATH": f"{bin_dir}:{env.get('PATH', '')}", "STAND_IN": image}

    return image_environment


def container(name: str, image: str, command: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "container": {"image": image, "command": ["sh", "-c", command], **extra}}


def test_a_container_of_a_known_image_runs_in_its_environment_and_workdir(
    tmp_path: Path, stand_in: Path
) -> None:
    seen: list[str] = []
    train = container(
        "train",
        MODEL_IMAGE,
        "python -c 'import os; print(os.getcwd(), os.environ[\"STAND_IN\"])'",
        workingDir="/tmp/code",
    )
    own = script("own", "import sys; print(sys.executable)")
    main = dag("main", [task("train", "train"), task("own", "own", depends="train")])

    runner = make_runner(tmp_path, image_environment=resolver(stand_in, seen))
    summary = runner.run(workflow([main, train, own]))

    assert summary.status == "Succeeded", summary.message
    state = runner.show(summary.run_id)
    log = (summary.run_dir / state.nodes["train"].log).read_text()
    assert "model-env python" in log  # its own python, not geomlops' interpreter
    assert "/tmp/code registry.example/model:1" in log
    # a script of an image with no stand-in keeps geomlops' interpreter
    assert sys.executable in (summary.run_dir / state.nodes["own"].log).read_text()
    assert seen == [MODEL_IMAGE, "python:3.11"]


def test_a_container_of_an_unknown_image_is_refused_unless_host_containers_are_allowed(
    tmp_path: Path, stand_in: Path
) -> None:
    manifest = workflow([container("other", "alpine:3", "echo ran")], entrypoint="other")

    summary = make_runner(tmp_path, image_environment=resolver(stand_in, [])).run(manifest)
    assert summary.status in ("Failed", "Error")
    assert "nothing on this machine stands in for image 'alpine:3'" in summary.message

    allowed = make_runner(tmp_path, image_environment=resolver(stand_in, []), allow_host_containers=True)
    assert allowed.run(manifest).status == "Succeeded"


def test_a_stand_in_that_cannot_be_made_errors_the_task_with_its_reason(tmp_path: Path) -> None:
    def broken(image: str, env: Mapping[str, str]) -> dict[str, str] | None:
        raise GeomlopsError("its environment needs Python 3.99, which this machine does not have")

    manifest = workflow([container("train", MODEL_IMAGE, "echo ran")], entrypoint="train")
    summary = make_runner(tmp_path, image_environment=broken).run(manifest)

    assert summary.status in ("Failed", "Error")
    assert "Python 3.99" in summary.message


def test_a_working_dir_outside_tmp_that_does_not_exist_is_an_error_in_the_sandbox(tmp_path: Path) -> None:
    manifest = workflow(
        [container("c", "alpine", "pwd", workingDir=f"/nonexistent-{tmp_path.name}/x")], entrypoint="c"
    )
    summary = make_runner(tmp_path, allow_host_containers=True, sandbox=True).run(manifest)
    assert summary.status in ("Failed", "Error")
    assert "does not exist (make it under /tmp)" in summary.message
    assert not Path(f"/nonexistent-{tmp_path.name}").exists()


#: a sidecar that serves on a free port of localhost, tells it through the pod's volume, and
#: never exits by itself (as a model server does). The volume's path comes in a variable: run
#: unisolated, the runner moves it to the pod's own folder
SIDECAR_SERVER = """
import os, socket, sys
server = socket.create_server(("127.0.0.1", 0))
port = server.getsockname()[1]
pod = os.environ["POD_DIR"]
with open(pod + "/port.part", "w") as f:
    f.write(str(port))
os.rename(pod + "/port.part", pod + "/port")
print("sidecar listening on", port, "with", os.environ["STAND_IN"], flush=True)
while True:
    conn, _ = server.accept()
    with conn:
        conn.sendall(b"hello from " + os.environ["POD"].encode() + b"\\n")
"""

MAIN_CLIENT = """
import os, socket, time
port_file = os.environ["POD_DIR"] + "/port"
for _ in range(600):
    if os.path.exists(port_file):
        break
    time.sleep(0.05)
port = int(open(port_file).read())
with socket.create_connection(("127.0.0.1", port)) as conn:
    print(conn.makefile().readline().strip())
"""


def pod_with_sidecar(name: str) -> dict[str, Any]:
    template = script(name, MAIN_CLIENT, inputs=["pod"])
    mount = [{"name": "pod", "mountPath": "/tmp/pod"}]
    template["script"]["volumeMounts"] = mount
    template["script"]["env"] = [{"name": "POD_DIR", "value": "/tmp/pod"}]
    template["volumes"] = [{"name": "pod", "emptyDir": {}}]
    template["sidecars"] = [
        {
            "name": "model",
            "image": MODEL_IMAGE,
            "command": ["python", "-c", SIDECAR_SERVER],
            "env": [
                {"name": "POD", "value": "{{inputs.parameters.pod}}"},
                {"name": "POD_DIR", "value": "/tmp/pod"},
            ],
            "volumeMounts": mount,
        }
    ]
    return template


@pytest.mark.parametrize("sandbox", [True, False], ids=["sandboxed", "unisolated"])
def test_sidecars_share_the_pods_volume_and_network_and_stop_with_the_main_container(
    tmp_path: Path, stand_in: Path, sandbox: bool
) -> None:
    seen: list[str] = []
    # two pods at once: each has its own volume, so each main container finds its own sidecar
    main = dag("main", [task(f"p{i}", "pod", args={"pod": f"pod-{i}"}) for i in (1, 2)])
    runner = make_runner(tmp_path, image_environment=resolver(stand_in, seen), sandbox=sandbox)

    summary = runner.run(workflow([main, pod_with_sidecar("pod")]))

    assert summary.status == "Succeeded", summary.message
    state = runner.show(summary.run_id)
    for i in (1, 2):
        node = state.nodes[f"p{i}"]
        assert (summary.run_dir / node.log).read_text().strip().endswith(f"hello from pod-{i}")
        sidecar_log = summary.run_dir / node.log.replace(".log", ".model.log")
        text = sidecar_log.read_text()
        assert "model-env python" in text and f"with {MODEL_IMAGE}" in text  # the image's stand-in
    # the never-ending sidecars were stopped when their main containers ended
    assert seen.count(MODEL_IMAGE) == 2


def test_a_sidecar_of_an_image_with_no_stand_in_errors_the_pod(tmp_path: Path, stand_in: Path) -> None:
    template = pod_with_sidecar("pod")
    template["sidecars"][0]["image"] = "unknown/server:1"
    manifest = workflow([template], entrypoint="pod", parameters={"pod": "x"})
    template["inputs"] = {"parameters": [{"name": "pod", "value": "{{workflow.parameters.pod}}"}]}

    summary = make_runner(tmp_path, image_environment=resolver(stand_in, [])).run(manifest)

    assert summary.status in ("Failed", "Error")
    assert (
        "sidecar 'model': nothing on this machine stands in for image 'unknown/server:1'" in summary.message
    )
