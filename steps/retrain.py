"""What the retrain workflow needs beyond the registration, training and promotion steps.

A change to a model's source code (a CI push) retrains the model: its package is checked out
at the pushed commit, and it trains on the dataset the model's registered version was trained
on, so that the promotion that follows compares code with code on the same data.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path, PurePosixPath

from geomlops.errors import DatasetNotFoundError, InvalidPackageError
from geomlops.files import atomic_path
from steps.dataset import DatasetRef

#: a full or abbreviated git commit id (a branch name would make a run unrepeatable)
COMMIT = re.compile(r"[0-9a-f]{7,40}")


def checkout_source(repository: str, commit: str, root: Path, package_dir: str = "") -> Path:
    """Check out ``repository`` at ``commit`` under ``root`` and return the package's folder.

    The checkout is kept at ``root/<hash of the repository>/<commit>``: running the step again
    with the same commit reuses it, and a failed clone leaves nothing behind.

    Args:
        repository: a git URL or a local repository folder.
        commit: the commit id (7 to 40 lowercase hexadecimal digits).
        root: where checkouts are kept.
        package_dir: the model package's folder inside the repository; empty: its root.

    Returns:
        The package folder inside the checkout.

    Raises:
        InvalidPackageError: a malformed commit or package_dir, an unreachable repository, an
            unknown commit, or no such folder at that commit (the message names which).
    """
    if not repository.strip():
        raise InvalidPackageError("repository: empty; expected a git URL or a repository folder")
    if not COMMIT.fullmatch(commit):
        raise InvalidPackageError(
            f"commit {commit!r}: expected a commit id of 7 to 40 lowercase hexadecimal digits"
        )
    sub = PurePosixPath(package_dir)
    if sub.is_absolute() or ".." in sub.parts:
        raise InvalidPackageError(
            f"package_dir {package_dir!r}: expected a relative folder inside the repository"
        )
    target = root / hashlib.sha256(repository.encode()).hexdigest()[:16] / commit
    if not (target / ".git").is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as partial:
            _git(
                "clone", "--quiet", "--no-checkout", repository, str(partial), what=f"repository {repository}"
            )
            _git(
                "-C", str(partial), "checkout", "--quiet", "--detach", commit,
                what=f"commit {commit} of {repository}",
            )  # fmt: skip
    package = target / sub
    if not package.is_dir():
        raise InvalidPackageError(
            f"package_dir {package_dir!r}: no such folder at commit {commit} of {repository}"
        )
    return package


def _git(*args: str, what: str) -> None:
    out = subprocess.run(["git", *args], capture_output=True, text=True)
    if out.returncode != 0:
        lines = (out.stderr or out.stdout).strip().splitlines()
        raise InvalidPackageError(f"{what}: {lines[-1] if lines else f'git exited {out.returncode}'}")


def registered_dataset(model: str, package_model: str = "", dataset_rev: str = "") -> DatasetRef:
    """The dataset the model's registered version was trained on.

    The version is the one behind the ``production`` alias, else the newest one.

    Args:
        model: the registered model's name (its id in the catalogue).
        package_model: the model id the checked-out package declares; when given it must be
            ``model`` (a repository retrains only its own model).
        dataset_rev: a git revision to read the same dataset path at; empty: exactly the
            recorded version (same commit, same content hash).

    Returns:
        The dataset version to train on.

    Raises:
        InvalidPackageError: the package declares another model.
        DatasetNotFoundError: the model has no registered version, its version records no
            dataset, or the path does not exist at ``dataset_rev``.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from steps.dataset import resolve_dataset
    from steps.promotion_report import production_version
    from steps.publish import DATASET_TAG

    if package_model and package_model != model:
        raise InvalidPackageError(
            f"the package declares model '{package_model}', but this run retrains '{model}': "
            "the repository's mapping names another model"
        )
    client = MlflowClient()
    version = production_version(model)
    if version is None:
        try:
            versions = client.search_model_versions(f"name = '{model}'")
        except MlflowException as err:
            raise DatasetNotFoundError(f"model '{model}': cannot read its versions ({err})") from err
        if not versions:
            raise DatasetNotFoundError(
                f"model '{model}' has no registered version to take its dataset from: train it once first"
            )
        version = str(max(int(v.version) for v in versions))
    tags = client.get_model_version(model, version).tags or {}
    if DATASET_TAG not in tags:
        raise DatasetNotFoundError(f"version {version} of '{model}' records no dataset ('{DATASET_TAG}' tag)")
    recorded = DatasetRef.model_validate_json(tags[DATASET_TAG])
    if not dataset_rev:
        return recorded
    return resolve_dataset(recorded.repo, recorded.path, dataset_rev)
