"""Script templates of the retrain workflow that no other workflow has. Each calls one step.

No ``from __future__ import annotations`` here: Hera reads the real annotation objects.
"""

from typing import Annotated

from hera.workflows import Parameter

from geomlops.settings import get_settings, use_tracking
from steps.dataset import DatasetRef
from templates.common import SMALL, geomlops_script


@geomlops_script(resources=SMALL)
def checkout_source(
    repository: str, commit: str, package_dir: str = ""
) -> Annotated[str, Parameter(name="package")]:
    """Check the model's repository out at the commit; the package folder in it."""
    from steps.retrain import checkout_source as checkout

    return str(checkout(repository, commit, get_settings().home_dir / "sources", package_dir))


@geomlops_script(resources=SMALL)
def registered_dataset(
    model: str, package_model: str = "", dataset_rev: str = ""
) -> Annotated[DatasetRef, Parameter(name="dataset")]:
    """The dataset the model's registered version was trained on (checked against the package)."""
    from steps.retrain import registered_dataset as registered

    use_tracking()
    return registered(model, package_model, dataset_rev)
