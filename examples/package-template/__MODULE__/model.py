"""The model: class 1 where the mean of the bands exceeds a learned threshold, else class 0."""

import mlflow
import numpy as np


class ThresholdModel(mlflow.pyfunc.PythonModel):
    """An MLflow pyfunc: (batch, bands, height, width) float32 -> (batch, height, width) uint8."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    # the hint is what batch inference passes; MLflow validates no schema for it (and asks for
    # a hint otherwise, in every log)
    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        array = np.asarray(model_input, dtype="float32")
        return (array.mean(axis=1) > self.threshold).astype("uint8")
