"""The registration WorkflowTemplate.

validate-package ─> build-image ─> catalog-base-item ─> register-model

validate-package checks the package against the contract (docs/model-package.md) and hands the
other steps its folder: an archive or git source is materialized under the work folder first.

Running it twice changes nothing the second time: the item is upserted, the registered model
is only created when absent, and the image build is content-addressed by its tag.
"""

from __future__ import annotations

from hera.workflows import DAG, Parameter, WorkflowTemplate

from pipelines._naming import workflow_metadata
from templates.registration import build_image, catalog_base_item, register_model, validate_package

NAME = "registration"

with WorkflowTemplate(
    **workflow_metadata(
        NAME,
        (
            "Check a model package against the contract (MLproject, environment, Dockerfile, MLM item), "
            "build and push its image, write its base item to the STAC catalogue and create the "
            "registered model in MLflow."
        ),
    ),
    entrypoint="registration",
    arguments=[
        Parameter(
            name="package",
            description=(
                "Model package: a folder (inside the step's volume or image), an archive "
                "(.tar.gz, .tgz, .tar, .zip) or git+URL@COMMIT."
            ),
        ),
        Parameter(name="push", value="true", enum=["true", "false"], description="Push the built image."),
        Parameter(name="cache_repo", value="", description="Registry repository for Kaniko's layer cache."),
    ],
) as workflow:
    with DAG(name="registration"):
        checked = validate_package(arguments={"package": "{{workflow.parameters.package}}"})
        image = build_image(
            arguments={
                "package": checked.get_parameter("package_dir"),
                "image": checked.get_parameter("image"),
                "push": "{{workflow.parameters.push}}",
                "cache_repo": "{{workflow.parameters.cache_repo}}",
            }
        )
        item = catalog_base_item(arguments={"package": checked.get_parameter("package_dir")})
        model = register_model(
            arguments={
                "model_id": checked.get_parameter("model_id"),
                "item": item.get_parameter("item"),
                "build": image.get_parameter("build"),
            }
        )
        checked >> image >> item >> model  # type: ignore[operator]
