"""The MLflow pyfunc model: raw scaled bands in, class masks out."""

from __future__ import annotations

from typing import Any

import numpy as np
from mlflow.models.signature import ModelSignature
from mlflow.pyfunc.model import PythonModel
from mlflow.types.schema import Schema, TensorSpec
from numpy.typing import NDArray
from sklearn.ensemble import HistGradientBoostingClassifier

from cloud_mask.data import BAND_IDS, CLASSES, N_BANDS, ClassInfo
from cloud_mask.features import pixel_features

#: Input (batch, bands, height, width) float32 -> output (batch, height, width) uint8.
#: Unnamed tensors: with a named input tensor, pyfunc hands ``predict`` a dict.
SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, N_BANDS, -1, -1))]),
    outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1))]),
)


class CloudMaskModel(PythonModel):
    """A per-pixel classifier wrapped to predict whole chips.

    Args:
        classifier: A fitted classifier over :func:`~cloud_mask.features.pixel_features`
            whose classes are the values of :data:`~cloud_mask.data.CLASSES`.
        classes: The output classes, recorded with the model.
    """

    def __init__(
        self,
        classifier: HistGradientBoostingClassifier,
        classes: tuple[ClassInfo, ...] = CLASSES,
    ) -> None:
        self.classifier = classifier
        self.classes = list(classes)
        self.band_names = list(BAND_IDS)

    # `np.ndarray` without type arguments on purpose: MLflow only skips its type-hint
    # schema inference (which cannot describe tensors) for exactly this annotation.
    def predict(
        self,
        context: Any,
        model_input: np.ndarray,
        params: dict[str, Any] | None = None,
    ) -> NDArray[np.uint8]:
        """Classify every pixel of a batch of chips.

        Args:
            context: MLflow's model context (unused).
            model_input: float32 scaled bands shaped ``(batch, 10, height, width)``.
            params: Unused; accepted for the pyfunc interface.

        Returns:
            uint8 class values shaped ``(batch, height, width)``.

        Raises:
            ValueError: If the input is not 4-D with 10 bands.
        """
        x = np.asarray(model_input, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != N_BANDS:
            raise ValueError(f"expected (batch, {N_BANDS}, height, width), got {x.shape}")
        batch, _, height, width = x.shape
        out = np.zeros((batch, height, width), dtype=np.uint8)
        if out.size == 0:
            return out
        flat = x.transpose(1, 0, 2, 3).reshape(N_BANDS, -1)
        predicted = self.classifier.predict(pixel_features(flat))
        return np.asarray(predicted, dtype=np.uint8).reshape(batch, height, width)
