"""Predict arrays with a pyfunc model in another interpreter (the model package's own).

geomlops never imports a model's framework: :func:`package_predictor` starts
:mod:`steps._pyfunc_worker` with the package environment's Python, hands it each array as an
``.npy`` file and reads the prediction back the same way.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from geomlops.errors import GeomlopsError

WORKER = Path(__file__).with_name("_pyfunc_worker.py")


def _answer(proc: subprocess.Popen[str], stderr: IO[str], what: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line in ("ok", "ready"):
        return line
    stderr.seek(0)
    tail = "\n".join(f"  {t}" for t in stderr.read().strip().splitlines()[-12:])
    reason = line.removeprefix("error: ") or f"the predictor exited with code {proc.poll()}"
    raise GeomlopsError(f"{what}: {reason}\n{tail}".rstrip())


@contextmanager
def package_predictor(
    python: str | Path, model_dir: str | Path
) -> Iterator[Callable[[NDArray[Any]], NDArray[Any]]]:
    """A ``predict(array) -> array`` running the pyfunc model at ``model_dir`` with ``python``.

    Args:
        python: the interpreter of the model's environment (holding its MLflow and framework).
        model_dir: a local folder of the logged model (with ``MLmodel``).

    Raises:
        GeomlopsError: the model cannot be loaded, or a prediction fails (the model's own last
            error lines in the message).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join([str(Path(python).parent), env.get("PATH", "")])
    with (
        tempfile.TemporaryDirectory(prefix="geomlops-predict-") as tmp,
        tempfile.TemporaryFile("w+") as errors,
    ):
        proc = subprocess.Popen(
            [str(python), str(WORKER), str(model_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=env,
            cwd=tmp,
        )
        try:
            _answer(proc, errors, f"cannot load the model {model_dir} with {python}")
            source, target = Path(tmp) / "in.npy", Path(tmp) / "out.npy"

            def predict(array: NDArray[Any]) -> NDArray[Any]:
                assert proc.stdin is not None
                np.save(source, array)
                proc.stdin.write(f"{source}\t{target}\n")
                proc.stdin.flush()
                _answer(
                    proc, errors, f"the model {model_dir} failed to predict an array of shape {array.shape}"
                )
                result: NDArray[Any] = np.load(target)
                return result

            yield predict
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
