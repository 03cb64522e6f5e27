"""Register model versions in the MLflow Model Registry, idempotently."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from geomlops.errors import RegistryError
from geomlops.objectstore import object_store_errors
from steps.training import WORKFLOW_TAG


def register_model_version(model_name: str, run_id: str, tags: Mapping[str, str] | None = None) -> str:
    """Register the model logged by ``run_id`` (artifact ``model``) as a version of ``model_name``.

    Running it twice for one run returns the same version: nothing is created twice.

    Returns:
        The version number, as a string.

    Raises:
        RegistryError: the run does not exist, did not finish, or logged no model; or the
            tracking server cannot be reached (the message says which).
        ObjectStoreUnavailableError: the object store holding the model cannot be reached.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"run_id '{run_id}': no such MLflow run") from err
        raise RegistryError(f"cannot read MLflow run '{run_id}': {err}") from err
    if run.info.status != "FINISHED":
        raise RegistryError(f"run_id '{run_id}': status is {run.info.status}, expected FINISHED")
    existing = client.search_model_versions(f"name='{model_name}' and run_id='{run_id}'")
    if existing:
        return str(existing[0].version)
    version_tags = dict(tags or {})
    uid = run.data.tags.get(WORKFLOW_TAG)
    if uid:
        version_tags[WORKFLOW_TAG] = uid
    # MLflow reads the logged model from the object store to register it
    with object_store_errors(f"registering run {run_id} as '{model_name}'"):
        try:
            mv = mlflow.register_model(f"runs:/{run_id}/model", model_name, tags=version_tags)
        except MlflowException as err:
            raise RegistryError(f"cannot register run {run_id} as '{model_name}': {err}") from err
    return str(mv.version)


def delete_unpublished_versions(
    model_name: str, workflow_uid: str, is_published: Callable[[str], bool]
) -> list[str]:
    """Delete versions that workflow ``workflow_uid`` registered but never published.

    Used by the training workflow's exit handler so a failed run leaves no model version
    without its STAC item.

    Args:
        model_name: registered model name.
        workflow_uid: the workflow run whose versions to check.
        is_published: tells whether a version has its STAC item.

    Returns:
        The versions deleted.

    Raises:
        RegistryError: the registry cannot be read (an unreachable server is not "no versions").
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name='{model_name}'")
    except MlflowException as err:
        raise RegistryError(f"cannot list the versions of '{model_name}': {err}") from err
    deleted = []
    for mv in versions:
        if (mv.tags or {}).get(WORKFLOW_TAG) == workflow_uid and not is_published(str(mv.version)):
            client.delete_model_version(model_name, mv.version)
            deleted.append(str(mv.version))
    return deleted


def ensure_registered_model(name: str, description: str = "", tags: Mapping[str, str] | None = None) -> bool:
    """Create registered model ``name`` if absent; bring its description and tags up to date.

    Returns:
        True when the model was created, False when it existed (running twice changes nothing).
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        current = client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"cannot read registered model '{name}': {err}") from err
        current = None
    if current is None:
        client.create_registered_model(name, tags=dict(tags or {}), description=description or None)
        return True
    if description and current.description != description:
        client.update_registered_model(name, description=description)
    for key, value in (tags or {}).items():
        if (current.tags or {}).get(key) != value:
            client.set_registered_model_tag(name, key, value)
    return False
