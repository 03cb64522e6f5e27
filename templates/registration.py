"""Script templates of the registration workflow. Each calls one step; no logic of its own.

No ``from __future__ import annotations`` here: Hera reads the real annotation objects.
"""

from pathlib import Path
from typing import Annotated

from hera.workflows import Parameter

from geomlops.settings import get_settings, use_tracking
from templates.common import BUILDER_IMAGE, LARGE, SMALL, geomlops_script


# no retry: an offline check has no transient fault to wait out
@geomlops_script(resources=SMALL, retry_strategy=None)
def validate_package(
    package: str,
) -> tuple[
    Annotated[str, Parameter(name="model_id")],
    Annotated[str, Parameter(name="image")],
    Annotated[str, Parameter(name="report")],
    Annotated[str, Parameter(name="package_dir")],
]:
    """Check the package against the contract (every fault at once, offline); an archive or
    git source is first materialized under the work folder's ``packages``."""
    from steps.package_check import validate_package as validate
    from steps.package_source import materialize_package

    settings = get_settings()
    root = materialize_package(package, settings.home_dir / "packages")
    # faults name the user's own folder, where they are mended, not the copy
    report = validate(root, settings.schema_dir, source=package if Path(package).is_dir() else None)
    return report.model_id, report.image, report.model_dump_json(), str(root)


@geomlops_script(resources=LARGE, image=BUILDER_IMAGE)
def build_image(
    package: str, image: str, push: str = "true", cache_repo: str = ""
) -> Annotated[str, Parameter(name="build")]:
    """Build and push the package's image (Kaniko in the cluster; recorded as skipped without a builder)."""
    from steps.image import build_image as build

    return build(package, image, push=push.lower() == "true", cache_repo=cache_repo).model_dump_json()


@geomlops_script(resources=SMALL)
def catalog_base_item(package: str) -> Annotated[str, Parameter(name="item")]:
    """Write the package's MLM item to the catalogue's models collection (upsert)."""
    from steps.catalog import publish_base_item

    settings = get_settings()
    href, _ = publish_base_item(package, settings.catalog_href, settings.schema_dir)
    return href


@geomlops_script(resources=SMALL)
def register_model(
    model_id: str, item: str, build: str
) -> tuple[Annotated[str, Parameter(name="created")], Annotated[str, Parameter(name="image")]]:
    """Create the registered model in MLflow (nothing changes when it already exists); say
    whether its image was built (the run's last words)."""
    from steps.image import ImageBuild
    from steps.registry import ensure_registered_model

    use_tracking()
    image = ImageBuild.model_validate_json(build)
    tags = {"geomlops.stac_item": item, "geomlops.image": image.destination}
    if image.digest:
        tags["geomlops.image_digest"] = image.digest
    created = ensure_registered_model(model_id, description=f"STAC item: {item}", tags=tags)
    return ("true" if created else "false"), image.said()
