"""Fetch a model's STAC item and turn it into a typed model spec."""

from __future__ import annotations

from catalog_sync import open_store
from catalog_sync.collections import MODELS, VERSIONS, version_item_id
from catalog_sync.mlm import ModelSpec, parse_model_item
from geomlops.errors import ItemNotFoundError, ModelNotFoundError, ParameterError


def fetch_model_spec(model_id: str, catalog: str, version: str | None = None) -> ModelSpec:
    """Read the item of ``model_id`` from the catalogue and parse its MLM fields: the item of
    ``version`` where given and published (what that version was trained with: its package,
    inputs, outputs and entry points, whatever was registered since), else the base item.

    Args:
        model_id: id of the model's item in the ``models`` collection.
        catalog: the catalogue's root href.
        version: a registered version's number.

    Returns:
        The model spec: entry points, images, inputs and outputs.

    Raises:
        ModelNotFoundError: no such model in the catalogue (the message lists those present).
        InvalidModelItemError: the item lacks an MLM field (named in the message).
    """
    store = open_store(catalog)
    if version is not None:
        item_id = version_item_id(model_id, version)
        try:
            return parse_model_item(
                store.get_item(VERSIONS, item_id), href=store.item_href(VERSIONS, item_id)
            )
        except ItemNotFoundError:
            pass  # a version published before its item (or another catalogue): the base item
    try:
        item = store.get_item(MODELS, model_id)
    except ItemNotFoundError as err:
        known = sorted(i["id"] for i in store.list_items(MODELS))
        raise ModelNotFoundError(
            f"model '{model_id}' is not in the catalogue {catalog} (models: {', '.join(known) or 'none'})"
        ) from err
    return parse_model_item(item, href=store.item_href(MODELS, model_id))


def model_image(spec: ModelSpec, override: str = "") -> str:
    """The image the model predicts in: ``override``, else its item's inference runtime, else
    its training runtime (the package's one image).

    Raises:
        ParameterError: none of them is given (naming the item's asset role to add).
    """
    image = override or spec.inference_image or spec.training_image
    if not image:
        raise ParameterError(
            f"model '{spec.name}': its item names no image to predict in (an asset with role "
            "'mlm:inference-runtime' or 'mlm:training-runtime'); add one, or pass parameter 'inference_image'"
        )
    return image
