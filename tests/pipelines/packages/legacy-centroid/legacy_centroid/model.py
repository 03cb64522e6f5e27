"""The pyfunc model: each pixel takes the class of the nearest band-value centroid."""

import mlflow.pyfunc
import numpy as np


class CentroidModel(mlflow.pyfunc.PythonModel):
    """``(batch, bands, h, w)`` float32 -> ``(batch, h, w)`` uint8 class values."""

    def __init__(self, values, centroids):
        self.values = np.asarray(values, dtype=np.uint8)
        self.centroids = np.asarray(centroids, dtype=np.float32)

    def predict(self, context, model_input, params=None):
        batch = np.asarray(model_input, dtype=np.float32)
        pixels = batch.transpose(0, 2, 3, 1)[..., None, :]
        distance = ((pixels - self.centroids) ** 2).sum(axis=-1)
        return self.values[distance.argmin(axis=-1)]
