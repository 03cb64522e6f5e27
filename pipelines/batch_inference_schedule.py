"""The CronWorkflow that maps a list of areas (countries) with the batch-inference template.

One run at a time: when a run is still going at the next due time, that next run is skipped
(``concurrencyPolicy: Forbid``) rather than started beside it. Each area is one call of the
batch-inference DAG through ``templateRef``, so the schedule and an on-demand run execute the
same template.
"""

from __future__ import annotations

import json

from hera.workflows import DAG, CronWorkflow, Parameter, Task
from hera.workflows.models import TemplateRef

from pipelines._naming import template_name, workflow_metadata

NAME = "batch-inference-schedule"

#: an example list: replace it per deployment (``-p areas=...`` or by editing the CronWorkflow)
EXAMPLE_AREAS = [
    {"area": "nepal", "aoi": "s3://geomlops-areas/nepal.geojson", "imagery": "s3://imagery/nepal/latest.tif"},
]

with CronWorkflow(
    **workflow_metadata(
        NAME,
        ("Monthly batch inference over a list of areas, one run at a time."),
    ),
    schedules=["0 2 1 * *"],
    timezone="UTC",
    concurrency_policy="Forbid",
    starting_deadline_seconds=3600,
    successful_jobs_history_limit=3,
    failed_jobs_history_limit=3,
    entrypoint="areas",
    arguments=[
        Parameter(
            name="areas",
            value=json.dumps(EXAMPLE_AREAS),
            description='JSON list of {"area", "aoi", "imagery"}: one batch inference per area.',
        ),
        Parameter(name="model", description="Registered model name."),
        Parameter(name="model_version", value="production", description="Version number or alias."),
        Parameter(name="block_size", value="512", description="Block side in pixels."),
    ],
) as workflow:
    with DAG(name="areas"):
        Task(
            name="area",
            template_ref=TemplateRef(name=template_name("batch-inference"), template="batch-inference"),
            with_param="{{workflow.parameters.areas}}",
            arguments={
                "model": "{{workflow.parameters.model}}",
                "model_version": "{{workflow.parameters.model_version}}",
                "imagery": "{{item.imagery}}",
                "aoi": "{{item.aoi}}",
                "area": "{{item.area}}",
                "block_size": "{{workflow.parameters.block_size}}",
            },
        )
