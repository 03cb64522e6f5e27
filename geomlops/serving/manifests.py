"""Serving manifests as plain dicts: Seldon Core v1 and v2, KServe. Pure functions, no IO.

Every manifest carries the model name, version and MLflow run id in its labels and annotations,
and refers to the object store credentials by the Secret's name only: no value is ever rendered.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict

#: the transformer class, as seldon-core's Python wrapper and our MLServer runtime load it
TRANSFORMER_CLASS = "geomlops.serving.transformer.GeoJSONTransformer"
#: the KServe transformer's entry point (KServe appends --model_name, --predictor_host, --http_port)
KSERVE_TRANSFORMER = ["python", "-m", "geomlops.serving.kserve_transformer"]
#: Seldon Core v2 capability of the servers that run the transformer (the transformer image)
TRANSFORMER_CAPABILITY = "geomlops-transformer"


class ServedModel(BaseModel):
    """What a serving manifest needs to know of one model version.

    Attributes:
        name: registered model name.
        version: model version number.
        run_id: MLflow run that produced the version.
        alias: the alias it was resolved from (``production``), if any.
        model_uri: where the MLflow model's files are (``s3://…`` in a cluster).
        tasks: MLM tasks of the model's output (they choose the post-processor).
        post_processing_function: the MLM output's post-processor expression, if any.
        classes: class value -> name, from the MLM output.
        bands: number of input bands the model expects.
        model_input: the MLM input (bands, shape, data type) the transformer checks chips against.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    version: str
    run_id: str
    alias: str | None = None
    model_uri: str
    tasks: tuple[str, ...] = ()
    post_processing_function: str | None = None
    classes: dict[int, str] = {}
    bands: int | None = None
    model_input: dict[str, Any] = {}


def k8s_name(text: str) -> str:
    """A DNS-1123 label from ``text`` (lowercase letters, digits and dashes, at most 63)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "model"


def trace_labels(model: ServedModel) -> dict[str, str]:
    """Labels every serving object carries (label values must be short and plain)."""
    return {
        "app.kubernetes.io/part-of": "geomlops",
        "app.kubernetes.io/component": "serving",
        "geomlops.io/model": k8s_name(model.name),
        "geomlops.io/model-version": k8s_name(model.version),
    }


def trace_annotations(model: ServedModel) -> dict[str, str]:
    """Annotations for traceability: exact name, version, run id, alias and model URI."""
    out = {
        "geomlops.io/model-name": model.name,
        "geomlops.io/model-version": model.version,
        "geomlops.io/mlflow-run-id": model.run_id,
        "geomlops.io/model-uri": model.model_uri,
    }
    if model.alias:
        out["geomlops.io/alias"] = model.alias
    return out


def _metadata(name: str, model: ServedModel, namespace: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": trace_labels(model),
        "annotations": trace_annotations(model),
    }


def transformer_parameters(model: ServedModel) -> dict[str, str]:
    """The transformer's constructor arguments (strings, as model servers pass them)."""
    return {
        "model_name": model.name,
        "model_version": model.version,
        "run_id": model.run_id,
        "tasks": ",".join(model.tasks),
        "post_processing_function": model.post_processing_function or "",
        "classes": json.dumps({str(k): v for k, v in sorted(model.classes.items())}),
    }


def seldon_v1(model: ServedModel, *, namespace: str, secret: str, image: str) -> list[dict[str, Any]]:
    """A ``SeldonDeployment``: the model as ``MLFLOW_SERVER`` under an ``OUTPUT_TRANSFORMER``.

    The request reaches the MLflow server; its output (the class mask) goes to the transformer,
    which answers with GeoJSON. The chip's georeference travels in ``meta.tags`` (``crs``,
    ``transform``). The model server reads the object store with the env of ``secret``
    (``envSecretRefName``; rclone's ``RCLONE_CONFIG_S3_*`` keys).
    """
    name = k8s_name(model.name)
    params = [{"name": k, "type": "STRING", "value": v} for k, v in transformer_parameters(model).items()]
    return [
        {
            "apiVersion": "machinelearning.seldon.io/v1",
            "kind": "SeldonDeployment",
            "metadata": _metadata(name, model, namespace),
            "spec": {
                "protocol": "seldon",
                "annotations": trace_annotations(model),
                "predictors": [
                    {
                        "name": "default",
                        "replicas": 1,
                        "labels": trace_labels(model),
                        "componentSpecs": [
                            {
                                "spec": {
                                    "containers": [
                                        {
                                            "name": "postprocess",
                                            "image": image,
                                            "command": [
                                                "seldon-core-microservice",
                                                TRANSFORMER_CLASS,
                                                # the wrapper serves /transform-output as a
                                                # TRANSFORMER; the graph node makes it an output one
                                                "--service-type",
                                                "TRANSFORMER",
                                            ],
                                        }
                                    ]
                                }
                            }
                        ],
                        "graph": {
                            "name": "postprocess",
                            "type": "OUTPUT_TRANSFORMER",
                            "endpoint": {"type": "REST"},
                            "parameters": params,
                            "children": [
                                {
                                    "name": "model",
                                    "implementation": "MLFLOW_SERVER",
                                    "modelUri": model.model_uri,
                                    "envSecretRefName": secret,
                                    "children": [],
                                }
                            ],
                        },
                    }
                ],
            },
        }
    ]


def seldon_v2(model: ServedModel, *, namespace: str, secret: str) -> list[dict[str, Any]]:
    """Seldon Core v2: the MLflow ``Model``, the transformer ``Model`` and the ``Pipeline`` joining them.

    The MLflow model runs on an MLServer with the ``mlflow`` capability; the transformer on a
    server offering :data:`TRANSFORMER_CAPABILITY` (the transformer image), with its lineage as
    model parameters. Both read the object store through the rclone ``secret`` (``secretName``).
    """
    name = k8s_name(model.name)
    transformer = k8s_name(f"{name}-postprocess")
    params = [{"name": k, "value": v} for k, v in transformer_parameters(model).items()]
    return [
        {
            "apiVersion": "mlops.seldon.io/v1alpha1",
            "kind": "Model",
            "metadata": _metadata(name, model, namespace),
            "spec": {"storageUri": model.model_uri, "requirements": ["mlflow"], "secretName": secret},
        },
        {
            "apiVersion": "mlops.seldon.io/v1alpha1",
            "kind": "Model",
            "metadata": _metadata(transformer, model, namespace),
            "spec": {
                "storageUri": model.model_uri,
                "requirements": [TRANSFORMER_CAPABILITY],
                "secretName": secret,
                "parameters": params,
            },
        },
        {
            "apiVersion": "mlops.seldon.io/v1alpha1",
            "kind": "Pipeline",
            "metadata": _metadata(k8s_name(f"{name}-pipeline"), model, namespace),
            "spec": {
                "steps": [{"name": name}, {"name": transformer, "inputs": [name]}],
                "output": {"steps": [transformer]},
            },
        },
    ]


def kserve(model: ServedModel, *, namespace: str, secret: str, image: str) -> list[dict[str, Any]]:
    """A ServiceAccount listing the credentials ``secret`` and a KServe ``InferenceService``:
    the MLflow model on the V2 protocol, with the post-processing transformer in front.

    KServe's storage initializer reads S3 credentials from the secrets of the predictor's
    ServiceAccount (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` keys). The transformer
    (:mod:`geomlops.serving.kserve_transformer`) takes the posted GeoTIFF chip, asks the predictor for its
    classes over the V2 protocol and answers GeoJSON; its lineage and the MLM input come as env.
    """
    name = k8s_name(model.name)
    account = k8s_name(f"{name}-serving")
    env = [
        {"name": f"GEOMLOPS_TRANSFORMER_{k.upper()}", "value": v}
        for k, v in transformer_parameters(model).items()
    ]
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _metadata(account, model, namespace),
            "secrets": [{"name": secret}],
        },
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": _metadata(name, model, namespace),
            "spec": {
                "predictor": {
                    "serviceAccountName": account,
                    "model": {
                        "modelFormat": {"name": "mlflow"},
                        "protocolVersion": "v2",
                        "storageUri": model.model_uri,
                    },
                },
                "transformer": {
                    "containers": [
                        {
                            "name": "kserve-container",
                            "image": image,
                            "command": KSERVE_TRANSFORMER,
                            "env": [
                                *env,
                                {
                                    "name": "GEOMLOPS_TRANSFORMER_INPUT",
                                    "value": json.dumps(model.model_input),
                                },
                            ],
                        }
                    ]
                },
            },
        },
    ]
