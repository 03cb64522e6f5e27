"""Serving manifests as plain dicts: Seldon Core v1 and v2, KServe. Pure functions (the
predictor's source is read once, from this package).

Every manifest carries the model name, version and MLflow run id in its labels and annotations,
and refers to the object store credentials by the Secret's name only: no value is ever rendered.

The model predicts in **its own image** (the MLM item's ``mlm:inference-runtime`` asset, else
its training image), running :mod:`geomlops.serving.predictor_server`, which needs nothing but
the Python, numpy and MLflow every model image has: the script comes in a ConfigMap mounted at
:data:`PREDICTOR_DIR`, so a package need not ship it, and the model's files are downloaded to
``/mnt/models`` by the platform's storage initializer (KServe's ``STORAGE_URI``, Seldon's
``modelUri``). The post-processing transformer runs in **geomlops' image**. The model image
must be able to read the model's files' store as the platform gives them (``/mnt/models``).

- KServe: an ``InferenceService`` whose predictor is that container, answering the V2
  protocol, and whose transformer is MLServer with :class:`geomlops.serving.runtime.GeoChipRuntime`
  (chip in, prepared and read by the MLM item, GeoJSON out);
- Seldon Core v1: a ``SeldonDeployment`` graph, that container as the ``MODEL`` (it answers
  Seldon's model API too) between the transformer as ``TRANSFORMER`` (chip prepared by the MLM
  input) and as ``OUTPUT_TRANSFORMER`` (answer read by the MLM output, GeoJSON out);
- Seldon Core v2: the model on an MLServer with the ``mlflow`` capability, the transformer on
  one offering :data:`TRANSFORMER_CAPABILITY`. Core 2 runs models only on its MLServer or
  Triton servers, so there the ``mlflow`` server's image must hold the model's requirements,
  and the pipeline's first step is the model: the client sends the chip prepared as the MLM
  input says; the transformer reads the answer by the MLM output.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from geomlops.errors import ServingError

#: the transformer class, as seldon-core's Python wrapper and our MLServer runtime load it
TRANSFORMER_CLASS = "geomlops.serving.transformer.GeoJSONTransformer"
#: the KServe transformer's entry point (KServe appends --model_name, --predictor_host, --http_port)
KSERVE_TRANSFORMER = ["python", "-m", "geomlops.serving.kserve_transformer"]
#: Seldon Core v2 capability of the servers that run the transformer (the transformer image)
TRANSFORMER_CAPABILITY = "geomlops-transformer"
#: where the predictor's script is mounted in the model's container
PREDICTOR_DIR = "/opt/geomlops"
#: the script's file name there (and its key in the ConfigMap)
PREDICTOR_FILE = "predictor_server.py"
#: where the platform's storage initializer puts the model's files
MODEL_DIR = "/mnt/models"
#: the predictor's port in the model's container
PREDICTOR_PORT = 8080


@cache
def predictor_source() -> str:
    """The text of :mod:`geomlops.serving.predictor_server`, for the ConfigMap."""
    return Path(__file__).with_name(PREDICTOR_FILE).read_text(encoding="utf-8")


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
        model_input: the MLM input (bands, shape, data type, value scaling) the transformer
            checks chips against and prepares them by.
        model_output: the MLM output (shape, dimensions, data type, classes, threshold,
            post-processor options) the transformer reads the predictor's answer by.
        image: the model's image (its MLM ``mlm:inference-runtime`` asset, else its training
            image), which runs the predictor in a cluster.
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
    model_output: dict[str, Any] = {}
    image: str | None = None


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
        # the post-processor options the MLM output carries (geomlops:buildings)
        "options": json.dumps(model.model_output.get("postprocessor_options") or {}, sort_keys=True),
    }


def seldon_parameters(model: ServedModel) -> dict[str, str]:
    """The transformer's arguments in a Seldon graph: :func:`transformer_parameters` and the MLM
    input and output, by which it prepares chips before the model and reads its answers after
    (the MLServer runtime of KServe and of one machine takes those from its own settings)."""
    return transformer_parameters(model) | {
        "input": json.dumps(model.model_input, sort_keys=True),
        "output": json.dumps(model.model_output, sort_keys=True),
    }


def _model_image(model: ServedModel) -> str:
    if not model.image:
        raise ServingError(
            f"model {model.name} v{model.version}: its MLM item names no image to predict in "
            "(an asset with role 'mlm:inference-runtime' or 'mlm:training-runtime')"
        )
    return model.image


def predictor_config_map(model: ServedModel, namespace: str) -> dict[str, Any]:
    """The ConfigMap holding the predictor's script, mounted into the model's container."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(k8s_name(f"{model.name}-predictor"), model, namespace),
        "data": {PREDICTOR_FILE: predictor_source()},
    }


def predictor_container(model: ServedModel, name: str, *, served_as: str, port: int | None) -> dict[str, Any]:
    """The container ``name``: the model's image running the predictor on ``/mnt/models``, the
    model named ``served_as`` in the V2 routes (``port`` None: the port Seldon gives in
    ``PREDICTIVE_UNIT_HTTP_SERVICE_PORT``)."""
    args = ["--model-dir", MODEL_DIR, "--name", served_as, "--version", model.version, "--host", "0.0.0.0"]
    container: dict[str, Any] = {
        "name": name,
        "image": _model_image(model),
        "command": ["python", f"{PREDICTOR_DIR}/{PREDICTOR_FILE}"],
        "args": args if port is None else [*args, "--port", str(port)],
        "volumeMounts": [{"name": "geomlops-predictor", "mountPath": PREDICTOR_DIR, "readOnly": True}],
    }
    if port is not None:
        container["ports"] = [{"containerPort": port, "protocol": "TCP"}]
    return container


def predictor_volume(model: ServedModel) -> dict[str, Any]:
    """The pod volume of the predictor's ConfigMap."""
    return {"name": "geomlops-predictor", "configMap": {"name": k8s_name(f"{model.name}-predictor")}}


def seldon_v1(model: ServedModel, *, namespace: str, secret: str, image: str) -> list[dict[str, Any]]:
    """The predictor's ConfigMap and a ``SeldonDeployment``: the model's image running the
    predictor as the ``MODEL``, between the transformer as ``TRANSFORMER`` (before it) and as
    ``OUTPUT_TRANSFORMER`` (after it).

    The request holds the chip's band values and, in ``meta.tags``, its georeference (``crs``,
    ``transform``). The ``preprocess`` node prepares the chip as the MLM input says (band
    count, scaling, type, fixed size); the predictor (Seldon's model API, in the model's own
    environment) answers; the ``postprocess`` node reads the answer as the MLM output says
    (class values, arg-max, threshold) and answers with GeoJSON. The storage initializer reads
    the object store with the env of ``secret`` (``envSecretRefName``; rclone's
    ``RCLONE_CONFIG_S3_*`` keys) and puts the model's files in ``/mnt/models``.
    """
    name = k8s_name(model.name)
    params = [{"name": k, "type": "STRING", "value": v} for k, v in seldon_parameters(model).items()]

    def transformer(node: str) -> dict[str, Any]:
        return {
            "name": node,
            "image": image,
            "command": [
                "seldon-core-microservice",
                TRANSFORMER_CLASS,
                # the wrapper serves /transform-input and /transform-output as a TRANSFORMER;
                # the graph node says which of them Seldon calls
                "--service-type",
                "TRANSFORMER",
            ],
        }

    return [
        predictor_config_map(model, namespace),
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
                                        transformer("preprocess"),
                                        transformer("postprocess"),
                                        predictor_container(model, "model", served_as=model.name, port=None),
                                    ],
                                    "volumes": [predictor_volume(model)],
                                }
                            }
                        ],
                        "graph": {
                            "name": "preprocess",
                            "type": "TRANSFORMER",
                            "endpoint": {"type": "REST"},
                            "parameters": params,
                            "children": [
                                {
                                    "name": "postprocess",
                                    "type": "OUTPUT_TRANSFORMER",
                                    "endpoint": {"type": "REST"},
                                    "parameters": params,
                                    "children": [
                                        {
                                            "name": "model",
                                            "type": "MODEL",
                                            "endpoint": {"type": "REST"},
                                            "modelUri": model.model_uri,
                                            "envSecretRefName": secret,
                                            "children": [],
                                        }
                                    ],
                                }
                            ],
                        },
                    }
                ],
            },
        },
    ]


def seldon_v2(model: ServedModel, *, namespace: str, secret: str) -> list[dict[str, Any]]:
    """Seldon Core v2: the MLflow ``Model``, the transformer ``Model`` and the ``Pipeline`` joining them.

    The MLflow model runs on an MLServer with the ``mlflow`` capability; the transformer on a
    server offering :data:`TRANSFORMER_CAPABILITY` (the transformer image), with its lineage as
    model parameters. Both read the object store through the rclone ``secret`` (``secretName``).
    """
    name = k8s_name(model.name)
    transformer = k8s_name(f"{name}-postprocess")
    params = [{"name": k, "value": v} for k, v in seldon_parameters(model).items()]
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
    """A ServiceAccount listing the credentials ``secret``, the predictor's ConfigMap and a
    KServe ``InferenceService``: the model's image running the predictor on the V2 protocol,
    with the post-processing transformer (``image``, geomlops') in front.

    KServe's storage initializer downloads ``STORAGE_URI`` to ``/mnt/models`` with the S3
    credentials of the predictor's ServiceAccount (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
    keys). The transformer (:mod:`geomlops.serving.kserve_transformer`) takes the posted GeoTIFF
    chip, prepares it as the MLM input says, asks the predictor over the V2 protocol, reads the
    answer as the MLM output says and answers GeoJSON; lineage and the MLM input and output come
    as env.
    """
    name = k8s_name(model.name)
    account = k8s_name(f"{name}-serving")
    env = [
        {"name": f"GEOMLOPS_TRANSFORMER_{k.upper()}", "value": v}
        for k, v in transformer_parameters(model).items()
    ]
    # KServe tells the transformer the InferenceService's name: the predictor answers to it
    predictor = predictor_container(model, "kserve-container", served_as=name, port=PREDICTOR_PORT)
    predictor["env"] = [{"name": "STORAGE_URI", "value": model.model_uri}]
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _metadata(account, model, namespace),
            "secrets": [{"name": secret}],
        },
        predictor_config_map(model, namespace),
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": _metadata(name, model, namespace),
            "spec": {
                "predictor": {
                    "serviceAccountName": account,
                    "containers": [predictor],
                    "volumes": [predictor_volume(model)],
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
                                {
                                    "name": "GEOMLOPS_TRANSFORMER_OUTPUT",
                                    "value": json.dumps(model.model_output),
                                },
                            ],
                        }
                    ]
                },
            },
        },
    ]
