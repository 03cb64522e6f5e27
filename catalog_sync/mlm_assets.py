"""Model assets and links of a model version's item, as the MLM extension defines them (pure).

A package's base item may describe several model artifacts, each an asset with the role
``mlm:model`` and its ``mlm:artifact_type`` (an ONNX file, a TorchScript module, a checkpoint,
the MLflow model ...). A version item keeps every one of them. The asset whose artifact type is
``mlflow.pyfunc`` stands for what training logs: in a version item it becomes the asset
``model``, the trained MLflow model of that version.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

#: the MLM asset roles geomlops reads
MODEL_ROLE = "mlm:model"
TRAINING_RUNTIME_ROLE = "mlm:training-runtime"
INFERENCE_RUNTIME_ROLE = "mlm:inference-runtime"
CODE_ROLE = "code"
#: ``mlm:artifact_type`` of the model geomlops trains, serves and predicts with
PYFUNC_ARTIFACT = "mlflow.pyfunc"
#: key of a package's non-pyfunc model asset named ``model`` in a version item
MOVED_MODEL_KEY = "base-model"
#: asset fields describing the bands a model reads (STAC 1.1 core, raster and eo extensions)
BAND_FIELDS = ("bands", "raster:bands", "eo:bands")


def is_model_asset(asset: Mapping[str, Any]) -> bool:
    """Whether an asset carries the ``mlm:model`` role."""
    return MODEL_ROLE in (asset.get("roles") or [])


def absolute_href(href: str, base: str) -> str:
    """``href`` resolved against the document at ``base`` (a path, ``file://`` or URL).

    URLs of any scheme, absolute paths and OCI image references (``host/repo:tag``, as in
    runtime assets) are returned unchanged.
    """
    if urlparse(href).scheme or href.startswith("/") or not _looks_relative(href):
        return href
    if urlparse(base).scheme not in ("", "file"):
        return urljoin(base, href)
    folder = Path(base.removeprefix("file://")).parent
    return str((folder / href).resolve())


def _looks_relative(href: str) -> bool:
    # "./x", "../x", "x/y.onnx", "weights.pt" are paths; "ghcr.io/org/image:tag" is an image
    first = href.split("/", 1)[0]
    return href.startswith((".", "#")) or not ("." in first and "/" in href)


def resolve_links(links: list[dict[str, Any]], base: str) -> list[dict[str, Any]]:
    """Links with every relative ``href`` made absolute against ``base``."""
    return [
        {**link, "href": absolute_href(str(link["href"]), base)} if "href" in link else link for link in links
    ]


def pyfunc_asset_key(assets: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Key of the model asset that stands for the trained MLflow model, if the item has one."""
    for key, asset in assets.items():
        if is_model_asset(asset) and asset.get("mlm:artifact_type") == PYFUNC_ARTIFACT:
            return key
    return None


def version_assets(
    assets: Mapping[str, Mapping[str, Any]],
    base_href: str,
    *,
    model_href: str,
    title: str,
    item_bands: list[Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """The assets of a version item: every base asset kept, hrefs absolute, the MLflow model set.

    Args:
        assets: the base item's assets.
        base_href: where the base item lives (relative hrefs resolve against it).
        model_href: where the trained MLflow model is (``file://``, ``s3://``).
        title: the MLflow model asset's title.
        item_bands: the item's ``properties.bands``, copied onto model assets lacking ``bands``
            when any asset uses ``bands`` (STAC 1.1 describes bands where the data is). The
            bands one model asset describes (``bands``, ``raster:bands``, ``eo:bands``) are
            copied onto the model assets that lack them: every artifact reads the same input.

    Returns:
        The new assets (the input is not changed). The trained MLflow model is always the
        asset ``model``, with the descriptive fields of the package's pyfunc asset if it has
        one; a package's other model asset keyed ``model`` is kept as ``base-model``.
    """
    out = {key: copy.deepcopy(dict(asset)) for key, asset in assets.items()}
    for asset in out.values():
        if "href" in asset:
            asset["href"] = absolute_href(str(asset["href"]), base_href)
    key = pyfunc_asset_key(out)
    described = out.pop(key) if key else {}
    if "model" in out:  # another artifact under the key the trained model takes
        out[MOVED_MODEL_KEY] = out.pop("model")
    out["model"] = {
        **described,
        "href": model_href,
        "title": title,
        "type": "application/octet-stream; framework=mlflow",
        "roles": list(dict.fromkeys([*(described.get("roles") or []), MODEL_ROLE])),
        "mlm:artifact_type": PYFUNC_ARTIFACT,
    }
    for field in BAND_FIELDS:
        bands = next((a[field] for a in out.values() if is_model_asset(a) and a.get(field)), None)
        if bands is None and field == "bands" and any("bands" in a for a in out.values()):
            bands = item_bands
        for asset in out.values():
            if bands and is_model_asset(asset) and not asset.get(field):
                asset[field] = copy.deepcopy(bands)
    return out
