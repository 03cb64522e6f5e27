"""What every geomlops script template shares: image, secret references, resources, retries.

Each template states only what differs from :func:`geomlops_script`'s defaults.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from hera.workflows import Env, Resources, RetryStrategy, SecretEnv, script
from hera.workflows.models import Backoff

from geomlops import __version__
from geomlops.errors import PERMANENT_EXIT_CODE, PermanentError
from steps.local_images import WORKFLOW_ENV

if TYPE_CHECKING:
    # Hera's own type for what its decorator returns: the function, callable as a Task in a DAG
    from hera.workflows.script import _ScriptDecoratedFunction

_Ins = ParamSpec("_Ins")
_Out = TypeVar("_Out")

#: the image every geomlops step runs in on a cluster
IMAGE = f"ghcr.io/geomlops/geomlops:{__version__}"
#: the geomlops image with Kaniko's executor added (root Dockerfile, target ``builder``)
BUILDER_IMAGE = f"ghcr.io/geomlops/geomlops-builder:{__version__}"

#: environment variable -> (Kubernetes secret, key) it is read from. Only references are
#: rendered, never values; every key is optional so one secret can serve both the local-like and
#: the services profile. Order is the manifest's order.
SECRET_KEYS: dict[str, tuple[str, str]] = {
    "GEOMLOPS_MLFLOW_TRACKING_URI": ("geomlops-config", "mlflow-tracking-uri"),
    "GEOMLOPS_MLFLOW_ARTIFACT_ROOT": ("geomlops-config", "mlflow-artifact-root"),
    "GEOMLOPS_CATALOG_ROOT": ("geomlops-config", "catalog-root"),
    "GEOMLOPS_DATA_REPO": ("geomlops-config", "data-repo"),
    "GEOMLOPS_STAC_API_URL": ("geomlops-config", "stac-api-url"),
    "GEOMLOPS_PROFILE": ("geomlops-config", "profile"),
    "GEOMLOPS_S3_ENDPOINT_URL": ("geomlops-config", "s3-endpoint-url"),
    "GEOMLOPS_DASK_SCHEDULER_ADDRESS": ("geomlops-config", "dask-scheduler-address"),
    "MLFLOW_TRACKING_USERNAME": ("geomlops-mlflow", "username"),
    "MLFLOW_TRACKING_PASSWORD": ("geomlops-mlflow", "password"),
    "AWS_ACCESS_KEY_ID": ("geomlops-s3", "access-key-id"),
    "AWS_SECRET_ACCESS_KEY": ("geomlops-s3", "secret-access-key"),
    "MLFLOW_S3_ENDPOINT_URL": ("geomlops-s3", "endpoint-url"),
}

#: the secret references every step's container gets
SECRET_ENV = [
    SecretEnv(name=name, secret_name=secret, secret_key=key, optional=True)
    for name, (secret, key) in SECRET_KEYS.items()
]

#: the workflow run's uid in a pod, for what a step keeps per run on one machine
#: (:mod:`steps.local_images`: which package stands in for the model's image in this run)
WORKFLOW_UID_ENV = Env(name=WORKFLOW_ENV, value="{{workflow.uid}}")

#: Argo retries a step unless it exited with :data:`PERMANENT_EXIT_CODE` (a permanent error)
NOT_PERMANENT = f"asInt(lastRetry.exitCode) != {PERMANENT_EXIT_CODE}"

#: for steps that talk to MLflow, DVC remotes or the catalogue: transient faults pass
NETWORK_RETRY = RetryStrategy(
    limit=2,
    retry_policy="Always",
    expression=NOT_PERMANENT,
    backoff=Backoff(duration="2s", factor=2, max_duration="1m"),
)

#: small steps: metadata reads and writes
SMALL = Resources(cpu_request="100m", memory_request="256Mi", memory_limit="1Gi")
#: training and evaluation on imagery
LARGE = Resources(cpu_request="1", memory_request="2Gi", memory_limit="8Gi")


def geomlops_script(
    *,
    resources: Resources,
    retry_strategy: RetryStrategy | None = NETWORK_RETRY,
    image: str = IMAGE,
    env: Sequence[Env | SecretEnv] = (),
    **script_kwargs: Any,
) -> Callable[[Callable[_Ins, _Out]], _ScriptDecoratedFunction[_Ins, _Out]]:
    """Hera's ``script`` decorator with what every geomlops template shares.

    The runner constructor (the container calls the function by its import path), the
    geomlops image and :data:`SECRET_ENV` are always set.

    Args:
        resources: the step's size (:data:`SMALL`, :data:`LARGE`).
        retry_strategy: :data:`NETWORK_RETRY` unless given; None for a step that must not be
            retried blindly.
        image: the container image; an ``{{inputs.parameters.…}}`` expression for a model's own.
        env: variables added after :data:`SECRET_ENV`.
        **script_kwargs: any other ``hera.workflows.Script`` field (``name``, ...).

    A :class:`~geomlops.errors.PermanentError` escaping the function ends the step with
    :data:`PERMANENT_EXIT_CODE` (its message on stderr), which the retry strategies'
    expression does not retry.

    Returns:
        The decorator that turns a function into a script template.
    """
    decorate = script(
        constructor="runner",
        image=image,
        resources=resources,
        retry_strategy=retry_strategy,
        env=[*SECRET_ENV, *env],
        **script_kwargs,
    )

    def decorator(function: Callable[_Ins, _Out]) -> _ScriptDecoratedFunction[_Ins, _Out]:
        return decorate(exit_code_for_permanent_errors(function))

    return decorator


def exit_code_for_permanent_errors(function: Callable[_Ins, _Out]) -> Callable[_Ins, _Out]:
    """``function``, exiting with :data:`PERMANENT_EXIT_CODE` when a permanent error escapes."""

    @functools.wraps(function)
    def guarded(*args: _Ins.args, **kwargs: _Ins.kwargs) -> _Out:
        try:
            return function(*args, **kwargs)
        except PermanentError as err:
            print(f"{type(err).__name__}: {err}", file=sys.stderr)
            print(f"(a permanent error: exit code {PERMANENT_EXIT_CODE}, not retried)", file=sys.stderr)
            raise SystemExit(PERMANENT_EXIT_CODE) from err

    return guarded
