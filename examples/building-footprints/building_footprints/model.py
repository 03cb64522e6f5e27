"""The MLflow pyfunc model: scaled RGB in, one building probability per pixel out.

``predict`` takes float32 ``(batch, 3, height, width)``, the bands red, green, blue scaled to
0..1 (the item's ``value_scaling``: min-max 0..255), any height and width, and returns float32
``(batch, 1, height, width)`` building probabilities. It bakes in no threshold nor classes: the
STAC item declares them (classes background/building, threshold 0.5).

The device is ``cpu`` unless the model is loaded with ``model_config={"device": "cuda"}``
(``mlflow.pyfunc.load_model(uri, model_config=...)``); a device that is not there is an error.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from mlflow.models.signature import ModelSignature
from mlflow.pyfunc.model import PythonModel
from mlflow.types.schema import Schema, TensorSpec

#: Unnamed tensors: with a named input tensor, pyfunc hands ``predict`` a dict.
SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))]),
    outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, -1, -1))]),
)
#: images predicted at once (memory: about 60 MB per 512 x 512 image on the CPU)
BATCH = 4


def pick_device(requested: str) -> Any:
    """The torch device for ``requested`` (``cpu``, ``cuda``, ``cuda:N``), or a clear error."""
    import torch

    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"model_config device {requested!r}: torch {torch.__version__} sees no CUDA device "
            "(a CPU build of torch, or no GPU on this machine); load with device 'cpu'"
        )
    return torch.device(requested)


class BuildingSegmenter(PythonModel):
    """Loads the U-Net's weights (artifact ``weights``) and its config (artifact ``config``)."""

    def load_context(self, context):  # type: ignore[no-untyped-def]
        import torch

        from building_footprints.net import UNet

        with open(context.artifacts["config"], encoding="utf-8") as file:
            config = json.load(file)
        self.device = pick_device(str((context.model_config or {}).get("device") or "cpu"))
        self.net = UNet(**config["net"])
        self.net.load_state_dict(
            torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        )
        self.net.to(self.device).eval()

    # no type hints: MLflow would read them as a signature
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        import torch

        array = np.asarray(model_input, dtype=np.float32)
        if array.ndim != 4 or array.shape[1] != 3:
            raise ValueError(f"expected (batch, 3, height, width) scaled RGB, got shape {array.shape}")
        out = np.empty((array.shape[0], 1, *array.shape[2:]), np.float32)
        with torch.inference_mode():
            for start in range(0, len(array), BATCH):
                x = torch.from_numpy(np.ascontiguousarray(array[start : start + BATCH])).to(self.device)
                out[start : start + BATCH] = torch.sigmoid(self.net(x)).float().cpu().numpy()
        return out
