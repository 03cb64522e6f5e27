"""Script templates of the batch-inference workflow. Each calls steps; no logic of its own.

No ``from __future__ import annotations`` here: Hera reads the real annotation objects.
"""

import json
from pathlib import Path
from typing import Annotated

from hera.workflows import Parameter

from geomlops.settings import get_settings, use_tracking
from templates.common import IMAGE, LARGE, SMALL, geomlops_script


@geomlops_script(resources=SMALL)
def plan_blocks(
    model: str,
    model_version: str,
    imagery: str,
    aoi: str = "",
    area: str = "aoi",
    block_size: int = 512,
    group_size: int = 4,
    output: str = "",
) -> tuple[
    Annotated[str, Parameter(name="groups")],
    Annotated[str, Parameter(name="output")],
    Annotated[str, Parameter(name="lineage")],
]:
    """Plan the blocks over the area of interest and resolve the model version."""
    from geomlops.names import check_name, check_output_folder, inside
    from steps.aoi import read_aoi
    from steps.batch import plan_batch, save_plan
    from steps.model_spec import fetch_model_spec
    from steps.predictions import resolve_version

    settings = get_settings()
    check_name(area, "parameter 'area'")  # a folder name and part of the item id
    if output:
        folder = check_output_folder(output, "parameter 'output'")
    else:
        folder = inside(settings.home_dir / "predictions", model, area, field="parameters 'model'/'area'")
    area_of_interest = read_aoi(aoi) if aoi else None
    use_tracking()
    lineage = resolve_version(model, model_version)
    spec = fetch_model_spec(model, settings.catalog_href)
    plan = plan_batch(
        imagery, area_of_interest, block_size=block_size, group_size=group_size, model_input=spec.inputs[0]
    )
    save_plan(plan, folder)
    return json.dumps(list(range(len(plan.groups)))), str(folder), lineage.model_dump_json()


@geomlops_script(resources=LARGE, image="{{inputs.parameters.inference_image}}")
def predict_blocks(
    output: str, lineage: str, group: int, halo: int = 16, inference_image: str = IMAGE
) -> Annotated[str, Parameter(name="predicted")]:
    """Predict one group of blocks with a halo (finished blocks are skipped)."""
    from steps.batch import predict_group
    from steps.model_spec import fetch_model_spec
    from steps.predictions import Lineage, read_plan

    use_tracking()
    folder = Path(output)
    plan = read_plan(folder)
    version = Lineage.model_validate_json(lineage)
    uri = f"models:/{version.model}/{version.model_version}"
    spec = fetch_model_spec(version.model, get_settings().catalog_href)
    return json.dumps(predict_group(uri, plan, list(plan.groups[group]), folder, halo=halo, spec=spec))


@geomlops_script(resources=LARGE)
def publish_predictions(
    output: str, lineage: str, area: str = "aoi"
) -> tuple[Annotated[str, Parameter(name="item")], Annotated[str, Parameter(name="features")]]:
    """Assemble the mask, vectorize it seam-free (on the configured Dask scheduler), write
    GeoParquet, GeoJSON, quicklook and item."""
    from steps.batch import assemble_mask
    from steps.predictions import Lineage, read_plan
    from steps.predictions import publish_predictions as publish

    settings = get_settings()
    folder = Path(output)
    plan = read_plan(folder)
    version = Lineage.model_validate_json(lineage)
    scheduler = settings.dask_scheduler_address or "threads"
    mask = assemble_mask(plan, folder)
    outputs = publish(
        mask, folder, plan, version, area=area, catalog=settings.catalog_href, scheduler=scheduler
    )
    return outputs.item, str(outputs.features)
