"""The batch-inference WorkflowTemplate.

plan-blocks ─> predict-blocks (one task per group of blocks, withParam) ─> publish-predictions
                                                                           (or publish-own-predictions)

Each block is read with a halo and only its centre kept; a predict task's pod runs the model in
its own image (a sidecar) beside geomlops' step, which traces each finished block's polygons
while the model predicts the next; publishing merges them seam-free. Where the model's item
chooses its package's own ``inference`` or ``postprocess`` entry point, the same sidecar runs it
(``publish-own-predictions``, chosen by the plan instead of ``publish-predictions``, has one too,
which loads nothing). Finished blocks are files:
a resumed run redoes none of them.
"""

from __future__ import annotations

from hera.workflows import DAG, Parameter, WorkflowTemplate
from hera.workflows.models import Inputs

from pipelines._naming import workflow_metadata
from templates.inference import plan_blocks, predict_blocks, publish_own_predictions, publish_predictions

NAME = "batch-inference"

ARGUMENTS = [
    Parameter(name="model", description="Registered model name."),
    Parameter(name="model_version", value="production", description="Version number or alias."),
    Parameter(name="imagery", description="GeoTIFF (path or URI) with the model's input bands."),
    Parameter(name="aoi", value="", description="GeoJSON area of interest (WGS84); empty: all imagery."),
    Parameter(name="area", value="aoi", description="Name of the area, used in output paths and ids."),
    Parameter(name="block_size", value="512", description="Block side in pixels."),
    Parameter(
        name="group_size",
        value="64",
        description=(
            "Blocks per prediction task, at most. Each task starts the model's worker and loads the "
            "model: fewer, larger tasks spend less time starting; more, smaller ones spread over "
            "more nodes."
        ),
    ),
    Parameter(
        name="halo",
        value="",
        description="Pixels read around each block; empty: the model item's geomlops:halo (receptive field).",
    ),
    Parameter(name="output", value="", description="Output folder; empty: the work folder's predictions/."),
    Parameter(
        name="inference_image",
        value="",
        description="The model's image to predict in; empty: its MLM item's inference runtime.",
    ),
]

with WorkflowTemplate(
    **workflow_metadata(
        NAME,
        (
            "Predict a model version over an area of interest in blocks with a halo, vectorize "
            "seam-free, and publish GeoParquet, GeoJSON, a quicklook and a STAC item."
        ),
    ),
    entrypoint="batch-inference",
    arguments=ARGUMENTS,
) as workflow:
    # the DAG takes inputs (filled from the workflow's arguments), so a CronWorkflow can call it
    # through templateRef once per area
    inputs = [
        Parameter(name=p.name, description=p.description)
        if p.value is None
        else Parameter(name=p.name, default=p.value, description=p.description)
        for p in ARGUMENTS
    ]
    with DAG(name="batch-inference", inputs=Inputs(parameters=[p.as_input() for p in inputs])):
        plan = plan_blocks(
            arguments={
                name: f"{{{{inputs.parameters.{name}}}}}"
                for name in (
                    "model",
                    "model_version",
                    "imagery",
                    "aoi",
                    "area",
                    "block_size",
                    "group_size",
                    "output",
                    "inference_image",
                )
            }
        )
        predict = predict_blocks(
            arguments={
                "output": plan.get_parameter("output"),
                "lineage": plan.get_parameter("lineage"),
                "group": "{{item}}",
                "model_uri": plan.get_parameter("model_uri"),
                "model_image": plan.get_parameter("model_image"),
                "device": plan.get_parameter("device"),
                "gpus": plan.get_parameter("gpus"),
                "halo": "{{inputs.parameters.halo}}",
                "worker_mode": plan.get_parameter("worker_mode"),
            },
            with_param=plan.get_parameter("groups"),
        )
        # one of the two publishes, as the plan says: geomlops traces the mask, or the package's
        # own postprocess does (that pod alone carries the model's image, to run it)
        chosen = plan.get_parameter("postprocess")
        publish = publish_predictions(
            when=f"{chosen} == geomlops",
            arguments={
                "output": plan.get_parameter("output"),
                "lineage": plan.get_parameter("lineage"),
                "area": "{{inputs.parameters.area}}",
            },
        )
        publish_own = publish_own_predictions(
            when=f"{chosen} == mlproject",
            arguments={
                "output": plan.get_parameter("output"),
                "lineage": plan.get_parameter("lineage"),
                "area": "{{inputs.parameters.area}}",
                "model_uri": plan.get_parameter("model_uri"),
                "model_image": plan.get_parameter("model_image"),
            },
        )
        plan >> predict >> [publish, publish_own]  # type: ignore[operator,list-item]
