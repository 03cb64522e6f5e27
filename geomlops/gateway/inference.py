"""On-demand inference: a small area of imagery, or an uploaded chip, to a GeoJSON FeatureCollection.

An area of interest is cut from the imagery as a GeoTIFF chip (pixels outside the area masked
as no data), so both ways of predicting take the same input as ``geomlops serve`` does:

- **through the serving endpoint** when one serves the requested version: the chip is posted
  to its V2 ``infer`` route (MLServer with :class:`geomlops.serving.runtime.GeoChipRuntime`);
  the endpoint is ``GEOMLOPS_GATEWAY_SERVING_URL``, or the one ``geomlops serve`` prepared in
  the work folder, when it answers ``/v2/models/NAME/versions/VERSION/ready``;
- **in-process** otherwise: the model is predicted by the package-environment worker (the
  interpreter of the environment the version was trained in, see
  :mod:`steps._package_predictor`), so the gateway never imports the model's framework, and the
  prediction is vectorized by the serving transformer in the gateway.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from geomlops.errors import AoiError, ChipError, GeomlopsError, ImageryMismatchError, ParameterError

if TYPE_CHECKING:
    from catalog_sync.mlm import ModelInput
    from geomlops.serving.manifests import ServedModel
    from geomlops.settings import Settings

_log = logging.getLogger("geomlops.gateway")
#: how long the gateway waits for a serving endpoint to say it is ready before predicting itself
READY_TIMEOUT_S = 2.0
#: the settings that bound on-demand inference, named in refusals
PIXELS_SETTING = "GEOMLOPS_GATEWAY_PREDICTIONS_MAX_PIXELS"
BYTES_SETTING = "GEOMLOPS_SERVING_MAX_IMAGE_BYTES"


class TooLargeError(GeomlopsError):
    """Raised when an area of interest or a chip is larger than on-demand inference takes (413)."""


class UnsupportedMediaTypeError(GeomlopsError):
    """Raised when a chip is sent with a Content-Type other than a GeoTIFF's (415)."""


@dataclass(frozen=True)
class Prediction:
    """A FeatureCollection and how it was made."""

    collection: dict[str, Any]
    via: Literal["serving", "in-process"]
    pixels: int


def check_imagery_location(imagery: str, roots: list[Path]) -> None:
    """Check that ``imagery`` is a URI, or an absolute path to a file under one of ``roots``
    (:func:`geomlops.gateway.imagery.readable_roots`): a caller names no other file of the
    gateway's machine.

    Raises:
        ParameterError: a relative path, outside every root (names them), or no such file.
    """
    from geomlops.gateway.imagery import check_readable

    if "://" in imagery:
        return
    if not Path(imagery).is_absolute():
        raise ParameterError(f"imagery {imagery!r}: expected an absolute path or a URI")
    check_readable(imagery, roots, what="imagery")


def cut_chip(
    imagery: str, aoi: dict[str, Any], model_input: ModelInput, max_pixels: int
) -> tuple[bytes, int]:
    """The pixels of ``imagery`` under ``aoi`` as a GeoTIFF, outside the area masked as no data.

    Args:
        imagery: a raster rasterio reads (path or URI), with the model's input bands.
        aoi: a GeoJSON Polygon, MultiPolygon, Feature or FeatureCollection in WGS 84.
        model_input: the model's MLM input (band count, data type).
        max_pixels: the largest window (width x height) read.

    Returns:
        The chip's bytes and its pixel count.

    Raises:
        ParameterError: the imagery cannot be read, is not georeferenced or does not match the model.
        AoiError: the AOI is invalid or does not overlap the imagery (message starts with ``aoi``).
        TooLargeError: the AOI's window over the imagery holds more than ``max_pixels`` pixels.
    """
    import rasterio
    from rasterio.errors import RasterioIOError
    from rasterio.features import geometry_mask
    from rasterio.io import MemoryFile
    from rasterio.windows import Window

    from steps.aoi import grid_aoi
    from steps.predict import check_imagery

    try:
        src = rasterio.open(imagery)
    except RasterioIOError as err:
        raise ParameterError(f"imagery {imagery!r}: cannot be read ({err})") from err
    with src:
        if src.crs is None or src.transform.is_identity:
            raise ParameterError(
                f"imagery {imagery!r}: not georeferenced (it needs a CRS and a geotransform)"
            )
        try:
            check_imagery(src, model_input)
        except ImageryMismatchError as err:
            raise ParameterError(f"imagery: {err}") from err
        try:
            gridded = grid_aoi(
                aoi, raster_crs=src.crs.to_string(), raster_transform=src.transform, raster_shape=src.shape
            )
        except AoiError as err:
            raise AoiError(f"aoi: {err}") from err
        col0, row0, col1, row1 = gridded.pixel_bounds
        width, height = col1 - col0, row1 - row0
        if width * height > max_pixels:
            raise TooLargeError(
                f"aoi: covers {width} x {height} = {width * height} pixels of the imagery, more than the "
                f"limit of {max_pixels} pixels ({PIXELS_SETTING}); start a batch inference run "
                "(POST /api/v1/runs/batch-inference) for a larger area"
            )
        window = Window(col0, row0, width, height)
        data = src.read(window=window, masked=True)
        transform = src.window_transform(window)
        outside = geometry_mask([gridded.geometry], out_shape=(height, width), transform=transform)
        valid = ~(np.ma.getmaskarray(data).any(axis=0) | outside)
        profile = {
            "driver": "GTiff",
            "width": width,
            "height": height,
            "count": src.count,
            "dtype": np.result_type(*src.dtypes).name,
            "crs": src.crs,
            "transform": transform,
            "compress": "deflate",
        }
        # the mask travels inside the file, so the serving endpoint sees the same no data
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), MemoryFile() as memfile:
            with memfile.open(**profile) as dst:
                dst.write(np.ma.filled(data, 0).astype(profile["dtype"]))
                dst.write_mask(valid.astype(np.uint8) * 255)
            return bytes(memfile.read()), width * height


def check_chip(data: bytes, max_bytes: int, max_pixels: int) -> int:
    """Check an uploaded chip's size before it is predicted; return its pixel count.

    Raises:
        ChipError: empty or not a readable raster.
        TooLargeError: more than ``max_bytes`` bytes, or more than ``max_pixels`` pixels.
    """
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import NotGeoreferencedWarning, RasterioError
    from rasterio.io import MemoryFile

    if not data:
        raise ChipError("chip: empty; expected the bytes of a GeoTIFF (Content-Type: image/tiff)")
    if len(data) > max_bytes:
        raise TooLargeError(
            f"chip: {len(data)} bytes, more than the limit of {max_bytes} bytes ({BYTES_SETTING})"
        )
    try:
        with warnings.catch_warnings():  # a chip without georeference is refused by open_chip
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with MemoryFile(data) as memfile, memfile.open() as src:
                pixels = int(src.width * src.height)
    except (RasterioError, CPLE_BaseError) as err:  # GDAL raises either for a corrupt file
        raise ChipError(f"chip: not a readable GeoTIFF ({err})") from err
    if pixels > max_pixels:
        raise TooLargeError(
            f"chip: {pixels} pixels, more than the limit of {max_pixels} pixels ({PIXELS_SETTING})"
        )
    return pixels


def serving_endpoint(settings: Settings, serving_url: str | None, model: ServedModel) -> str | None:
    """The V2 ``infer`` URL of a serving endpoint ready with ``model``'s version, or None.

    Asked, in order: ``serving_url`` (a V2 server's root), then the server ``geomlops serve``
    prepared for the model in the work folder. One that does not answer ready within
    :data:`READY_TIMEOUT_S`, or serves another version, is passed over.
    """
    import requests

    from geomlops.serving.manifests import k8s_name

    roots = [serving_url] if serving_url else []
    local = settings.home_dir / "serving" / "local" / k8s_name(model.name) / "settings.json"
    if local.is_file():
        try:
            served = json.loads(local.read_text(encoding="utf-8"))
            host = str(served.get("host") or "127.0.0.1")
            host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            roots.append(f"http://{host}:{int(served['http_port'])}")
        except (ValueError, KeyError, TypeError):
            _log.warning("on-demand inference: %s is not MLServer's settings; not used", local)
    for root in roots:
        base = f"{root.rstrip('/')}/v2/models/{model.name}/versions/{model.version}"
        try:
            if requests.get(f"{base}/ready", timeout=READY_TIMEOUT_S).status_code == 200:
                return f"{base}/infer"
        except requests.RequestException:
            continue
    return None


def predict_via_serving(url: str, chip: bytes) -> dict[str, Any] | None:
    """The FeatureCollection the serving endpoint at ``url`` answers for ``chip``.

    Returns None when the endpoint fails or cannot be reached (the caller predicts itself).

    Raises:
        ChipError: the endpoint refused the chip (4xx), with its reason.
    """
    import requests

    body = {
        "inputs": [
            {"name": "chip", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(chip).decode()]}
        ]
    }
    try:
        answer = requests.post(url, json=body, timeout=300)
    except requests.RequestException as err:
        _log.warning("on-demand inference: %s cannot be reached (%s); predicting in-process", url, err)
        return None
    if 400 <= answer.status_code < 500:
        detail = answer.json().get("error", answer.text) if answer.text.startswith("{") else answer.text
        raise ChipError(f"chip: the serving endpoint refused it: {str(detail)[:500]}")
    if answer.status_code != 200:
        _log.warning("on-demand inference: %s answered %s; predicting in-process", url, answer.status_code)
        return None
    output = next(o for o in answer.json()["outputs"] if o["name"] == "geojson")
    collection: dict[str, Any] = json.loads(output["data"][0])
    return collection


def _model_files(settings: Settings, model: ServedModel) -> Path:
    """The version's model files, downloaded once into the work folder (versions never change)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from geomlops.settings import use_tracking

    local = Path(model.model_uri.removeprefix("file://"))
    if local.is_dir():
        return local
    key = hashlib.sha256(model.model_uri.encode()).hexdigest()[:24]
    folder = settings.home_dir / "gateway" / "models" / key
    if (folder / "MLmodel").is_file():
        return folder
    use_tracking(settings)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        try:
            found = Path(mlflow.artifacts.download_artifacts(artifact_uri=model.model_uri, dst_path=tmp))
        except MlflowException as err:
            raise GeomlopsError(
                f"model {model.name} v{model.version}: cannot be downloaded ({err.message})"
            ) from err
        if not (folder / "MLmodel").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            found.rename(folder)
    return folder


def model_interpreter(settings: Settings, model: ServedModel, files: Path) -> str:
    """The Python to run ``model`` (its files in ``files``) with: the environment its run was
    trained in, else one with what its logged declaration asks for
    (:func:`steps.package_env.logged_model_python`)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from steps.evaluation import ENVIRONMENT_TAG
    from steps.package_env import logged_model_python

    try:
        tags = MlflowClient(tracking_uri=settings.tracking_uri).get_run(model.run_id).data.tags
    except MlflowException:
        tags = {}
    return logged_model_python(tags.get(ENVIRONMENT_TAG, ""), files)


@contextmanager
def _worker(settings: Settings, model: ServedModel) -> Iterator[Any]:
    from steps._package_predictor import package_predictor

    files = _model_files(settings, model)
    with package_predictor(model_interpreter(settings, model, files), files) as predict:
        yield predict


def predict_in_process(settings: Settings, model: ServedModel, chip: bytes) -> dict[str, Any]:
    """Predict ``chip`` with the package-environment worker and vectorize it here.

    Raises:
        ChipError: the chip is not what the model takes.
        GeomlopsError: the model cannot be loaded or fails to predict.
    """
    from catalog_sync.mlm import ModelInput
    from geomlops.serving.chips import model_io, open_chip, predict_chip
    from geomlops.serving.manifests import transformer_parameters
    from geomlops.serving.transformer import GeoJSONTransformer, Georeference

    model_input = ModelInput.model_validate(model.model_input)
    # the size was checked by the caller (the area's or the chip's pixels): open_chip's limit on
    # decoded bytes is relative to the bytes sent, which a well-compressed chip would fail
    with open_chip(chip, model_input, max_bytes=max(len(chip), settings.serving_max_image_bytes)) as src:
        georef = Georeference(crs=src.crs.to_wkt(), transform=tuple(src.transform)[:6])
        io = model_io(model_input, model.model_output)
        with _worker(settings, model) as predict:
            mask = predict_chip(predict, src, model_input, io)
    return GeoJSONTransformer(**transformer_parameters(model)).to_geojson(mask, georef)


def predict(
    settings: Settings, serving_url: str | None, model: ServedModel, chip: bytes, pixels: int
) -> Prediction:
    """Predict ``chip`` through the serving endpoint when one serves ``model``, else in-process."""
    url = serving_endpoint(settings, serving_url, model)
    if url is not None and len(chip) <= settings.serving_max_image_bytes:
        found = predict_via_serving(url, chip)
        if found is not None:
            return Prediction(found, "serving", pixels)
    return Prediction(predict_in_process(settings, model, chip), "in-process", pixels)
