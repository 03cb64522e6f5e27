"""The pyfunc model: a LightGBM booster applied to every pixel's band values."""

import lightgbm
import mlflow.pyfunc
import numpy as np


class BoosterModel(mlflow.pyfunc.PythonModel):
    """``(batch, bands, h, w)`` float32 -> ``(batch, h, w)`` uint8 class values."""

    def load_context(self, context):
        self.booster = lightgbm.Booster(model_file=context.artifacts["booster"])

    def predict(self, context, model_input, params=None):
        batch = np.asarray(model_input, dtype=np.float32)
        n, bands, height, width = batch.shape
        pixels = batch.transpose(0, 2, 3, 1).reshape(-1, bands)
        positive = self.booster.predict(pixels) > 0.5
        return positive.astype(np.uint8).reshape(n, height, width)
