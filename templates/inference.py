"""Script templates of the batch-inference workflow. Each calls steps; no logic of its own.

No ``from __future__ import annotations`` here: Hera reads the real annotation objects.

The predict step's pod has two containers: geomlops' step reads the imagery, prepares each
block as the model's MLM item says, interprets the answers and traces polygons; the model's
worker (:mod:`steps._pyfunc_worker`, a file of the standard library and numpy, passed in the
manifest so the package need not carry it) runs as a sidecar in the model's own image, loads the
model once and predicts what the step hands it over ``localhost``. The worker picks a free port
and writes it to the pod's ``emptyDir`` volume, where the step reads it.
"""

import json
from pathlib import Path
from typing import Annotated

from hera.workflows import EmptyDirVolume, Env, Parameter, Resources, UserContainer
from hera.workflows.models import VolumeMount

from geomlops.settings import get_settings, use_tracking
from templates.common import LARGE, SMALL, WORKFLOW_UID_ENV, geomlops_script
from templates.training import MLFLOW_ENV

#: the pod's volume shared by the step and the model's worker
WORKER_DIR = "/tmp/geomlops-worker"
#: where the worker writes its port (a variable: the local runner moves the volume when unisolated)
PORT_FILE_ENV = Env(name="GEOMLOPS_WORKER_PORT_FILE", value=f"{WORKER_DIR}/port")
#: seconds the step waits for the worker's port and then for the model to load
WORKER_START_TIMEOUT = 900
WORKER_SOURCE = (Path(__file__).resolve().parents[1] / "steps" / "_pyfunc_worker.py").read_text(
    encoding="utf-8"
)

#: a GPU for the model's container when its MLM accelerator is cuda (``gpus`` "1"; "0": none)
MODEL_GPU_PATCH = (
    "containers:\n- name: model\n  resources:\n    limits:\n"
    '      nvidia.com/gpu: "{{inputs.parameters.gpus}}"\n'
)


def _model_worker(mode: str, resources: Resources) -> UserContainer:
    """The model's worker in its image, beside the step; ``mode`` (an expression or a value):
    ``pyfunc`` loads the model, ``commands`` runs the package's entry points."""
    return UserContainer(
        name="model",
        image="{{inputs.parameters.model_image}}",
        command=["python", "-c", WORKER_SOURCE],
        args=[
            "{{inputs.parameters.model_uri}}",
            "--listen",
            "127.0.0.1:0",
            "--device",
            "{{inputs.parameters.device}}",
            "--mode",
            mode,
        ],
        env=[*MLFLOW_ENV, PORT_FILE_ENV, WORKFLOW_UID_ENV],
        volume_mounts=[VolumeMount(name="worker", mount_path=WORKER_DIR)],
        resources=resources,
    )


model_worker = _model_worker("{{inputs.parameters.worker_mode}}", LARGE)
#: the worker that runs the package's own post-processing, beside the publishing step that the
#: plan chooses where the item asks for it; it waits while the mask is assembled, so it asks for
#: little, but may use as much as a step on a whole area's mask
commands_worker = _model_worker(
    "commands", Resources(cpu_request="100m", memory_request="256Mi", memory_limit=LARGE.memory_limit)
)


def _worker(model_uri: str, model_image: str):  # type: ignore[no-untyped-def]
    """The connection to this pod's model worker, and the folder both share."""
    import os

    from steps._package_predictor import socket_predictor

    port_file = Path(os.environ["GEOMLOPS_WORKER_PORT_FILE"])
    opened = socket_predictor(
        port_file,
        model=model_uri,
        timeout=WORKER_START_TIMEOUT,
        log_hint=f"the log of container 'model' in this pod ({model_image})",
    )
    return opened, port_file.parent


@geomlops_script(resources=SMALL, env=[WORKFLOW_UID_ENV])
def plan_blocks(
    model: str,
    model_version: str,
    imagery: str,
    aoi: str = "",
    area: str = "aoi",
    block_size: int = 512,
    group_size: int = 64,
    output: str = "",
    inference_image: str = "",
) -> tuple[
    Annotated[str, Parameter(name="groups")],
    Annotated[str, Parameter(name="output")],
    Annotated[str, Parameter(name="lineage")],
    Annotated[str, Parameter(name="model_uri")],
    Annotated[str, Parameter(name="model_image")],
    Annotated[str, Parameter(name="device")],
    Annotated[str, Parameter(name="gpus")],
    Annotated[str, Parameter(name="worker_mode")],
    Annotated[str, Parameter(name="postprocess")],
    Annotated[str, Parameter(name="blocks")],
]:
    """Plan the blocks over the area of interest, resolve the model version and its image
    (the MLM item's inference runtime; a GPU where its accelerator is cuda), how its worker
    predicts (the logged model, or the package's own inference entry point) and what turns the
    mask into features (``geomlops``, or ``mlproject``: the package's own postprocess), and
    how many blocks there are to predict (what the predict tasks' progress adds up to)."""
    from geomlops.names import check_name, check_output_folder, inside
    from steps.aoi import read_aoi
    from steps.batch import check_batch_locations, plan_batch, start_plan
    from steps.local_images import record_image, this_workflow
    from steps.model_spec import fetch_model_spec, model_image
    from steps.own_entry_points import chosen_inference, chosen_postprocess
    from steps.predictions import check_output_item, predictions_item_id, resolve_version

    settings = get_settings()
    check_name(area, "parameter 'area'")  # a folder name and part of the item id
    folder = check_output_folder(output, "parameter 'output'") if output else None
    predictions = settings.home_dir / "predictions"
    inside(predictions, model, area, field="parameters 'model'/'area'")  # before MLflow is asked
    check_batch_locations(imagery, aoi)
    area_of_interest = read_aoi(aoi) if aoi else None
    use_tracking()
    lineage = resolve_version(model, model_version)
    if folder is None:  # one folder per version and area, as the predictions item's id
        folder = inside(
            predictions,
            model,
            f"v{lineage.model_version}",
            area,
            field="parameters 'model'/'area'",
        )
    check_output_item(folder, predictions_item_id(lineage, area))
    spec = fetch_model_spec(model, settings.catalog_href, lineage.model_version)
    plan = plan_batch(
        imagery, area_of_interest, block_size=block_size, group_size=group_size, model_input=spec.inputs[0]
    ).model_copy(update={"run": this_workflow()})
    start_plan(plan, folder)  # blocks an earlier run left in the folder are not this run's
    for note in plan.notes:
        print(f"note: {note}")
    image = model_image(spec, inference_image)
    if spec.package_uri:  # on one machine, the package's environment stands in for its image
        record_image(image, spec.package_uri, settings.home_dir, workflow=this_workflow())
    gpus = 1 if spec.accelerator == "cuda" else 0  # as the version's item says
    return (
        json.dumps(list(range(len(plan.groups)))),
        str(folder),
        lineage.model_dump_json(),
        f"models:/{lineage.model}/{lineage.model_version}",
        image,
        "cuda" if gpus else "cpu",
        str(gpus),
        "pyfunc" if chosen_inference(spec) is None else "commands",
        "geomlops" if chosen_postprocess(spec) is None else "mlproject",
        str(sum(len(group) for group in plan.groups)),
    )


@geomlops_script(
    resources=LARGE,
    volumes=[EmptyDirVolume(name="worker", mount_path=WORKER_DIR)],
    sidecars=[model_worker],
    env=[PORT_FILE_ENV, WORKFLOW_UID_ENV],
    pod_spec_patch=MODEL_GPU_PATCH,
)
def predict_blocks(
    output: str,
    lineage: str,
    group: int,
    model_uri: str,
    model_image: str,
    device: str = "cpu",
    gpus: str = "0",
    halo: str = "",
    worker_mode: str = "pyfunc",
) -> Annotated[str, Parameter(name="predicted")]:
    """Predict one group of blocks (finished blocks are skipped) with the model's worker beside
    this step; the halo from the MLM item unless given. A plan of one group has its feature
    files written while it is predicted (unless the package post-processes them itself). The
    blocks done are reported as the task's progress (``N/M``)."""
    from geomlops.argo.task_progress import report_progress
    from steps.batch import predict_group
    from steps.local_images import this_workflow
    from steps.model_spec import fetch_model_spec
    from steps.own_entry_points import chosen_postprocess
    from steps.predictions import Lineage, features_while_predicting, read_plan

    use_tracking()
    folder = Path(output)
    plan = read_plan(folder, this_workflow())
    version = Lineage.model_validate_json(lineage)
    spec = fetch_model_spec(version.model, get_settings().catalog_href, version.model_version)

    opened, shared = _worker(model_uri, model_image)
    predicted = predict_group(
        model_uri,
        plan,
        list(plan.groups[group]),
        folder,
        halo=int(halo) if halo else None,
        spec=spec,
        predictor=lambda: opened,
        beside=None if chosen_postprocess(spec) else features_while_predicting(folder, plan, version),
        shared=shared,
        progress=report_progress,  # blocks done of the group's: Argo shows them as the task's progress
    )
    return json.dumps(predicted)


def _publish(output: str, lineage: str, area: str, worker) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """Publish the run's predictions (``worker``: opens the worker for the package's own
    post-processing); the item's path and the number of features."""
    from steps.local_images import this_workflow
    from steps.predictions import Lineage, publish_batch, read_plan

    use_tracking()
    settings = get_settings()
    folder = Path(output)
    outputs = publish_batch(
        folder,
        read_plan(folder, this_workflow()),
        Lineage.model_validate_json(lineage),
        area=area,
        catalog=settings.catalog_href,
        scheduler=settings.dask_scheduler_address or "threads",
        worker=worker,
    )
    return outputs.item, str(outputs.features)


def _no_worker():  # type: ignore[no-untyped-def]
    """What a publishing step planned without the package's worker has in its place."""
    from geomlops.errors import InvalidModelItemError

    raise InvalidModelItemError(
        "the model's item chooses its package's own postprocess entry point, but the run was planned "
        "when it did not (this step has no worker for it): start a new run"
    )


@geomlops_script(resources=LARGE, env=[WORKFLOW_UID_ENV])
def publish_predictions(
    output: str,
    lineage: str,
    area: str = "aoi",
) -> tuple[Annotated[str, Parameter(name="item")], Annotated[str, Parameter(name="features")]]:
    """Assemble the mask, vectorize it seam-free (on the configured Dask scheduler) and write
    GeoParquet, GeoJSON, quicklook, vector tiles and the STAC item."""
    return _publish(output, lineage, area, _no_worker)


@geomlops_script(
    resources=LARGE,
    volumes=[EmptyDirVolume(name="worker", mount_path=WORKER_DIR)],
    sidecars=[commands_worker],
    env=[PORT_FILE_ENV, WORKFLOW_UID_ENV],
)
def publish_own_predictions(
    output: str,
    lineage: str,
    area: str = "aoi",
    model_uri: str = "",
    model_image: str = "",
    device: str = "cpu",
) -> tuple[Annotated[str, Parameter(name="item")], Annotated[str, Parameter(name="features")]]:
    """Assemble the mask, have the package's own post-processing entry point turn it into
    features (the worker beside this step, in the model's image, runs it) and write them as
    geomlops writes its own."""
    return _publish(output, lineage, area, lambda: _worker(model_uri, model_image))
