"""Serving manifests for a registered model version: resolve it, render, write, apply.

Which manifests are rendered is a setting (``GEOMLOPS_SERVING_KIND``): Seldon Core v1
(``SeldonDeployment``), Seldon Core v2 (``Model`` + ``Pipeline``) or KServe
(``InferenceService``). The pure renderers live in :mod:`geomlops.serving.manifests`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geomlops import __version__
from geomlops.errors import CatalogError, ConfigurationError, ItemNotFoundError, RegistryError, ServingError
from geomlops.files import write_atomic
from geomlops.serving.manifests import ServedModel, k8s_name, kserve, seldon_v1, seldon_v2
from geomlops.settings import Settings, get_settings

if TYPE_CHECKING:
    from catalog_sync.mlm import ModelSpec

#: the default transformer image (the geomlops image with the transformer's serving entry points)
TRANSFORMER_IMAGE = f"ghcr.io/geomlops/geomlops-transformer:{__version__}"


def parse_model_reference(reference: str, default_alias: str = "production") -> tuple[str, str]:
    """Split ``MODEL[@ALIAS|@VERSION]`` into the model name and the alias or version.

    Raises:
        ServingError: an empty model name or alias.
    """
    name, _, alias = reference.partition("@")
    if not name.strip() or (reference.count("@") and not alias.strip()):
        raise ServingError(f"model reference {reference!r}: expected MODEL, MODEL@ALIAS or MODEL@VERSION")
    return name.strip(), alias.strip() or default_alias


def resolve_served_model(
    model_name: str, alias: str = "production", settings: Settings | None = None
) -> ServedModel:
    """Resolve an alias (or a version number) of a registered model to what serving needs.

    The version, its run id and the storage location of its files (the registry's artifact
    location: ``s3://…`` with the services profile) come from MLflow; the tasks, classes and
    post-processor from the version's MLM item in the catalogue (else the model's base item).

    Raises:
        RegistryError: no such model, alias or version (the message lists the versions and
            aliases there are).
        TrackingUnavailableError: MLflow cannot be reached.
        CatalogError: the model has no MLM item in the catalogue.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from geomlops.tracking import unreachable_error
    from steps.predictions import not_found_message

    settings = settings or get_settings()
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    try:
        if alias.isdigit():
            mv = client.get_model_version(model_name, alias)
        else:
            mv = client.get_model_version_by_alias(model_name, alias)
    except MlflowException as err:
        if (unreachable := unreachable_error(err, settings.tracking_uri)) is not None:
            raise unreachable from err
        # as batch inference says it: the versions and aliases there are
        hint = (  # none promoted yet: how to serve one anyway
            f"serve a version by its number ({model_name}@VERSION) or promote one first "
            f"(geomlops run promotion -p model={model_name} -p candidate=VERSION)"
            if alias == "production"
            else ""
        )
        raise RegistryError(not_found_message(client, model_name, alias, missing_alias_hint=hint)) from err
    version = str(mv.version)
    try:
        uri = client.get_model_version_download_uri(model_name, version)
    except MlflowException as err:
        raise RegistryError(
            f"model '{model_name}' version {version}: MLflow gives no location of its files ({err})"
        ) from err
    spec = served_model_spec(model_name, version, settings)
    output = spec.outputs[0]
    return ServedModel(
        name=model_name,
        version=version,
        run_id=str(mv.run_id),
        alias=None if alias.isdigit() else alias,
        model_uri=uri,
        tasks=output.tasks,
        post_processing_function=output.post_processing_function,
        classes={c.value: c.name for c in output.classes},
        bands=len(spec.inputs[0].source_bands) or None,
        model_input=spec.inputs[0].model_dump(mode="json"),
        model_output=output.model_dump(mode="json"),
        image=spec.inference_image or spec.training_image,
    )


def served_model_spec(model_name: str, version: str, settings: Settings | None = None) -> ModelSpec:
    """The MLM spec of a model version: its version item, else the model's base item.

    Raises:
        CatalogError: neither item is in the catalogue.
    """
    from catalog_sync import open_store
    from catalog_sync.collections import MODELS, VERSIONS, version_item_id
    from catalog_sync.mlm import parse_model_item

    settings = settings or get_settings()
    store = open_store(settings.catalog_href)
    for collection, item_id in ((VERSIONS, version_item_id(model_name, version)), (MODELS, model_name)):
        try:
            return parse_model_item(store.get_item(collection, item_id))
        except ItemNotFoundError:
            continue
    raise CatalogError(
        f"model '{model_name}' v{version}: no MLM item in the catalogue {settings.catalog_href} "
        f"({VERSIONS}/{version_item_id(model_name, version)} nor {MODELS}/{model_name})"
    )


def render_serving_manifests(model: ServedModel, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The manifests of the serving kind chosen in the settings, for ``model``."""
    settings = settings or get_settings()
    namespace, secret = settings.serving_namespace, settings.serving_secret
    image = settings.transformer_image or TRANSFORMER_IMAGE
    if settings.serving_kind == "seldon-v1":
        return seldon_v1(model, namespace=namespace, secret=secret, image=image)
    if settings.serving_kind == "seldon-v2":
        return seldon_v2(model, namespace=namespace, secret=secret)
    return kserve(model, namespace=namespace, secret=secret, image=image)


def write_serving_manifests(
    model_name: str, alias: str = "production", out_dir: str | Path | None = None
) -> list[Path]:
    """Resolve ``alias`` of ``model_name``, render its serving manifests and write them as YAML.

    Args:
        model_name: registered model name.
        alias: alias (``production``) or version number.
        out_dir: folder to write to; default ``$GEOMLOPS_HOME/serving/<model>/<kind>``.

    Returns:
        One file per Kubernetes object, in the order to apply them.

    Raises:
        RegistryError: the alias or version is not in the registry.
        CatalogError: the model has no MLM item.
        ServingError: the folder cannot be written (nothing is left half-written).
    """
    import yaml

    settings = get_settings()
    model = resolve_served_model(model_name, alias, settings)
    manifests = render_serving_manifests(model, settings)
    folder = (
        Path(out_dir)
        if out_dir is not None
        else settings.home_dir / "serving" / k8s_name(model_name) / settings.serving_kind
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ServingError(f"out_dir {folder}: cannot be created ({err})") from err
    paths = []
    for index, manifest in enumerate(manifests):
        name = f"{index:02d}-{manifest['kind'].lower()}-{manifest['metadata']['name']}.yaml"
        path = folder / name
        try:
            write_atomic(path, yaml.safe_dump(manifest, sort_keys=False))
        except OSError as err:
            raise ServingError(f"{path}: cannot be written ({err})") from err
        paths.append(path)
    return paths


def apply_serving_manifests(paths: list[Path]) -> None:
    """``kubectl apply -f`` each manifest when the settings say to apply; otherwise do nothing
    and say so.

    Raises:
        ConfigurationError: applying is on but ``kubectl`` is not on PATH.
        ServingError: a file is missing, or kubectl refuses one (its message kept).
    """
    settings = get_settings()
    if not settings.serving_apply:
        print(f"serving manifests not applied (GEOMLOPS_SERVING_APPLY is off): {', '.join(map(str, paths))}")
        return
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise ConfigurationError(
            "GEOMLOPS_SERVING_APPLY is on but kubectl is not on PATH: install kubectl or turn it off"
        )
    for path in paths:
        if not Path(path).is_file():
            raise ServingError(f"{path}: manifest not found")
    for path in paths:
        done = subprocess.run([kubectl, "apply", "-f", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            raise ServingError(
                f"kubectl apply -f {path} failed: {done.stderr.strip() or done.stdout.strip()}"
            )
        print(done.stdout.strip())
