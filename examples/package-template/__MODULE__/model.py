"""The model: class 1 where the mean of the bands exceeds a learned threshold, else class 0."""

import mlflow
import numpy as np


class ThresholdModel(mlflow.pyfunc.PythonModel):
    """An MLflow pyfunc: (batch, bands, height, width) float32 -> (batch, height, width) uint8."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def predict(self, context, model_input, params=None):
        array = np.asarray(model_input, dtype="float32")
        return (array.mean(axis=1) > self.threshold).astype("uint8")
