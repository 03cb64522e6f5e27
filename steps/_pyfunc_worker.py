"""Predict with an MLflow pyfunc model inside a model package's own interpreter.

Run as a script by the package environment's Python (``python _pyfunc_worker.py MODEL_DIR``),
never imported by geomlops: it needs only the standard library, numpy and the package's own
MLflow. It loads the model once, then answers one request a line on stdin,
``INPUT.npy<TAB>OUTPUT.npy``: it predicts the input array and saves the prediction, then writes
``ok`` (or ``error: MESSAGE``) on its protocol stream. Whatever the model prints goes to
stderr, so it never mixes with the answers.
"""

import os
import sys
import traceback


def main() -> int:
    """Serve predictions until stdin closes."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the model's own prints go to stderr
    import numpy as np

    try:
        import mlflow.pyfunc

        model = mlflow.pyfunc.load_model(sys.argv[1])
    except Exception as err:  # noqa: BLE001 - reported to the caller, who raises
        protocol.write(f"error: cannot load the model: {type(err).__name__}: {err}\n")
        return 1
    protocol.write("ready\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        source, target = line.rstrip("\n").split("\t")
        try:
            result = np.asarray(model.predict(np.load(source)))
            np.save(target, result)
            protocol.write("ok\n")
        except Exception as err:  # noqa: BLE001 - reported to the caller, who raises
            traceback.print_exc()
            protocol.write(f"error: {type(err).__name__}: {err}\n".replace("\n", " ").rstrip() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
