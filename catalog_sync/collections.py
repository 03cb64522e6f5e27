"""The catalogue's collections: their names, descriptions and item ids.

Every store (static or PgSTAC) holds these collections; steps name them through the constants
here, never by literal strings.
"""

from __future__ import annotations

#: base models: one item per registered model package (MLM extension)
MODELS = "models"
#: trained model versions, linked to their MLflow run, data and code
VERSIONS = "model-versions"
#: prediction runs over an area, ``derived_from`` a model version
PREDICTIONS = "predictions"
#: training and evaluation datasets
DATASETS = "datasets"

#: collections every store holds, with their descriptions
COLLECTIONS = {
    MODELS: "Base models: one item per model package, with the MLM extension.",
    VERSIONS: "Trained model versions, linked to their MLflow run, data and code.",
    PREDICTIONS: "Prediction runs: vectorized outputs of a model version over an area, derived_from it.",
    DATASETS: "Training and evaluation datasets: DVC path, revision and content hash.",
}


def version_item_id(model_id: str, version: str) -> str:
    """The item id of version ``version`` of model ``model_id`` in :data:`VERSIONS`."""
    return f"{model_id}-v{version}"
