"""``train`` entry point: fit the pixel classifier on the train split and log it to MLflow.

Only pixels with ``split == 1`` and a label other than 255 are read. :func:`mlflow.start_run`
starts the run: geomlops sets ``MLFLOW_EXPERIMENT_ID`` and ``MLFLOW_RUN_CONTEXT`` (the tags it
finds the run by); under a plain ``mlflow run`` the run already exists (``MLFLOW_RUN_ID``) and
the same call resumes it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import time
import warnings
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import rasterio
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from numpy.typing import NDArray
from sklearn.ensemble import HistGradientBoostingClassifier

from cloud_mask.data import CLASSES, IGNORE_VALUE, POSITIVE_CLASS
from cloud_mask.features import FEATURE_NAMES, pixel_features
from cloud_mask.model import SIGNATURE, CloudMaskModel
from cloud_mask.preprocess import IMAGE_FILE, LABELS_FILE, METADATA_FILE, SPLIT_FILE
from cloud_mask.split import TRAIN

PACKAGE_DIR = Path(__file__).resolve().parent


def dataset_digest(data_dir: Path) -> str:
    """Return the SHA-256 over the dataset's four files, in a fixed order."""
    digest = hashlib.sha256()
    for name in (IMAGE_FILE, LABELS_FILE, SPLIT_FILE, METADATA_FILE):
        digest.update(name.encode())
        digest.update((data_dir / name).read_bytes())
    return digest.hexdigest()


def load_training_pixels(
    data_dir: Path, max_samples: int, seed: int
) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """Read a random sample of labelled train pixels.

    Args:
        data_dir: Dataset folder written by :func:`cloud_mask.preprocess.preprocess`.
        max_samples: Most pixels to return (all when there are fewer).
        seed: Seed of the sample.

    Returns:
        Bands shaped ``(10, n)`` and labels shaped ``(n,)``, in raster order.

    Raises:
        FileNotFoundError: If a dataset file is missing.
        ValueError: If there is no labelled train pixel.
    """
    for name in (IMAGE_FILE, LABELS_FILE, SPLIT_FILE):
        if not (data_dir / name).is_file():
            raise FileNotFoundError(f"dataset file {data_dir / name} does not exist")
    with rasterio.open(data_dir / LABELS_FILE) as src:
        labels = src.read(1)
    with rasterio.open(data_dir / SPLIT_FILE) as src:
        split = src.read(1)
    index = np.flatnonzero((split == TRAIN) & (labels != IGNORE_VALUE))
    if index.size == 0:
        raise ValueError(f"{data_dir} has no labelled train pixel")
    if index.size > max_samples:
        rng = np.random.default_rng(seed)
        index = np.sort(rng.choice(index, size=max_samples, replace=False))
    with rasterio.open(data_dir / IMAGE_FILE) as src:
        image = src.read(out_dtype="float32")
    bands = image.reshape(image.shape[0], -1)[:, index]
    return bands, labels.reshape(-1)[index]


def _binary_scores(truth: NDArray[np.uint8], predicted: NDArray[np.uint8]) -> dict[str, float]:
    positive, hit = truth == POSITIVE_CLASS, predicted == POSITIVE_CLASS
    tp = float(np.count_nonzero(positive & hit))
    fp = float(np.count_nonzero(~positive & hit))
    fn = float(np.count_nonzero(positive & ~hit))
    return {
        "train_accuracy": float(np.mean(truth == predicted)),
        "train_iou": tp / (tp + fp + fn) if tp + fp + fn else 0.0,
        "train_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
    }


def _input_example(data_dir: Path, size: int = 4) -> NDArray[np.float32]:
    """A small chip of the dataset; MLflow checks the model predicts it when logging."""
    with rasterio.open(data_dir / IMAGE_FILE) as src:
        chip = src.read(window=((0, size), (0, size)), out_dtype="float32")
    return np.asarray(chip[None], dtype=np.float32)


def _pip_requirements() -> list[str]:
    names = ("mlflow", "scikit-learn", "numpy", "cloudpickle", "rasterio", "shapely")
    return [f"{name}=={importlib.metadata.version(name)}" for name in names]


def train(
    data: str | Path,
    *,
    max_iter: int = 100,
    learning_rate: float = 0.1,
    max_samples: int = 100_000,
    seed: int = 42,
) -> str:
    """Fit the classifier on the train split and log params, metrics and model to MLflow.

    Args:
        data: Dataset folder written by :func:`cloud_mask.preprocess.preprocess`.
        max_iter: Boosting iterations.
        learning_rate: Boosting learning rate.
        max_samples: Most train pixels to fit on (a seeded random sample).
        seed: Seed of the pixel sample and of the classifier.

    Returns:
        The MLflow run id.

    Raises:
        FileNotFoundError: If a dataset file is missing.
    """
    data_dir = Path(data).resolve()
    if not (data_dir / METADATA_FILE).is_file():
        raise FileNotFoundError(f"dataset file {data_dir / METADATA_FILE} does not exist")
    metadata: dict[str, Any] = json.loads((data_dir / METADATA_FILE).read_text("utf-8"))
    bands, labels = load_training_pixels(data_dir, max_samples, seed)
    features = pixel_features(bands)
    classifier = HistGradientBoostingClassifier(
        max_iter=max_iter, learning_rate=learning_rate, early_stopping=False, random_state=seed
    )
    started = time.perf_counter()
    classifier.fit(features, labels)
    fit_seconds = time.perf_counter() - started
    scores = _binary_scores(labels, classifier.predict(features).astype(np.uint8))
    digest = dataset_digest(data_dir)

    with mlflow.start_run() as run:
        params: dict[str, Any] = {
            "data": str(data),
            "max_iter": max_iter,
            "learning_rate": learning_rate,
            "max_samples": max_samples,
            "seed": seed,
            "classifier": "HistGradientBoostingClassifier",
            "features": ",".join(FEATURE_NAMES),
        }
        # `mlflow run` already logged the entry point's parameters as typed by the user;
        # logging one again with another spelling (0.10 vs 0.1) would be refused.
        logged = mlflow.get_run(run.info.run_id).data.params
        mlflow.log_params({k: v for k, v in params.items() if k not in logged})
        mlflow.log_metrics(
            {
                **scores,
                "fit_seconds": fit_seconds,
                "n_train_pixels": float(labels.size),
                "n_train_positive_pixels": float(np.count_nonzero(labels == POSITIVE_CLASS)),
            }
        )
        mlflow.set_tags({"dataset.name": str(metadata.get("name")), "dataset.sha256": digest})
        with warnings.catch_warnings():
            # MLflow registers the local-file source twice and warns that it is ambiguous.
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(data_dir))
        # MetaDataset implements `profile`; MLflow's stubs still mark it abstract.
        dataset = MetaDataset(source, name=str(metadata.get("name")), digest=digest[:16])  # type: ignore[abstract]
        mlflow.log_input(dataset, context="training")
        mlflow.log_artifact(str(data_dir / METADATA_FILE), artifact_path="dataset")
        mlflow.log_dict({"classes": list(CLASSES)}, "classes.json")
        mlflow.pyfunc.log_model(
            name="model",
            python_model=CloudMaskModel(classifier),
            signature=SIGNATURE,
            input_example=_input_example(data_dir),
            code_paths=[str(PACKAGE_DIR)],
            pip_requirements=_pip_requirements(),
            metadata={"classes": list(CLASSES), "bands": metadata.get("bands", [])},
        )
        return str(run.info.run_id)


def main(argv: list[str] | None = None) -> None:
    """Command line of the ``train`` entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="dataset folder")
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--max-samples", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    run_id = train(
        args.data,
        max_iter=args.max_iter,
        learning_rate=args.learning_rate,
        max_samples=args.max_samples,
        seed=args.seed,
    )
    print(f"trained model logged to run {run_id}")


if __name__ == "__main__":
    main()
