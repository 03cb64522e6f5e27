"""A package's own ``inference`` and ``postprocess`` entry points, where its MLM item chooses them.

By default geomlops predicts through the logged pyfunc model (prepared and read as the item
says: :mod:`steps.model_io`) and traces polygons itself (:mod:`postprocessing.registry`). A model
that needs its own code for either names an entry point of its MLproject in its item:

- ``mlm:input[0]["geomlops:inference"]: "inference"``: every block, with its halo, is written
  as a GeoTIFF of the imagery's bands as stored (no scaling: the package does its own), the
  entry point runs on it with ``-P model_uri=… -P image=… -P output=…`` (and ``-P device=…``
  where it declares ``device``), and the raster it writes (the image's grid) is read back and
  interpreted by the item's ``mlm:output`` as the model's answer would be: class values, one
  score above ``geomlops:threshold``, or one band per class. Blocks, seams, resuming and
  publishing stay geomlops';
- ``mlm:output[0].post_processing_function: {"format": "mlproject", "expression":
  "postprocess"}``: the assembled class mask is handed to the entry point with ``-P mask=… -P
  output=…``; the GeoJSON it writes (RFC 7946 longitude/latitude, or the CRS its ``crs`` member
  names) replaces geomlops' polygons, and geomlops adds the lineage, the areas and the block,
  and writes the same files, tiles, quicklook and item.

Either runs in the package's environment (on Argo: in the model's image, by the model's worker
beside the step in commands mode, :mod:`steps._pyfunc_worker`), on a copy of the package in the
folder both share. The entry point starts, and loads its model, once per block: a block size
larger than the default pays for that.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from catalog_sync.mlm import ModelOutput, ModelSpec
from geomlops.errors import InvalidModelItemError, PackageOutputError

#: the parameters geomlops passes to the entry point each option names
INFERENCE_PARAMETERS = ("model_uri", "image", "output")
POSTPROCESS_PARAMETERS = ("mask", "output")
#: passed only where the entry point declares it
OPTIONAL_PARAMETERS = ("device",)
#: the item's fields that choose them
INFERENCE_FIELD = "$.properties['mlm:input'][0]['geomlops:inference']"
POSTPROCESS_FIELD = "$.properties['mlm:output'][0].post_processing_function.expression"
#: the package's copy, and each run's files, in the shared folder
PACKAGE_FOLDER = "package"
MODEL_FOLDER = "model"
_RUNS_FOLDER = "runs"


class Worker(Protocol):
    """What runs a command in the package's environment (a worker in commands mode)."""

    device: str

    def run(self, command: str, cwd: str, what: str) -> None: ...


def chosen_inference(spec: ModelSpec | None) -> str | None:
    """The entry point the item chooses to predict with, or None (the pyfunc model)."""
    return spec.inputs[0].entry_point if spec is not None and spec.inputs else None


def chosen_postprocess(spec: ModelSpec | None) -> str | None:
    """The entry point the item chooses to post-process with, or None (geomlops' own)."""
    return spec.outputs[0].entry_point if spec is not None and spec.outputs else None


def passed_parameters(spec: ModelSpec | None) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """What geomlops passes to each entry point the item chooses: the parameters it must
    declare, and those passed only where declared (``device``)."""
    chosen = (
        (chosen_inference(spec), INFERENCE_PARAMETERS, OPTIONAL_PARAMETERS),
        (chosen_postprocess(spec), POSTPROCESS_PARAMETERS, ()),
    )
    passed: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for name, needed, optional in chosen:  # one chosen for both is a fault of the item
        if name is not None:
            passed.setdefault(name, (needed, optional))
    return passed


def entry_point_faults(spec: ModelSpec, entry_points: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The item's choices of an entry point the package's MLproject ``entry_points`` lacks
    (their parameters are checked with the MLproject's, by ``steps.package_check``).

    Returns:
        ``(field, expected)`` per fault, the field in the MLM item.
    """
    faults = []
    for field, name in (
        (INFERENCE_FIELD, chosen_inference(spec)),
        (POSTPROCESS_FIELD, chosen_postprocess(spec)),
    ):
        if name is not None and name not in entry_points:
            have = ", ".join(sorted(entry_points)) or "none"
            faults.append((field, f"an entry point of the MLproject; {name!r} is not one (it has {have})"))
    both = chosen_inference(spec)
    if both is not None and both == chosen_postprocess(spec):
        expected = (
            f"an entry point other than the one that predicts ({both!r}): geomlops passes each "
            f"its own parameters ({', '.join(INFERENCE_PARAMETERS)}; {', '.join(POSTPROCESS_PARAMETERS)})"
        )
        faults.append((POSTPROCESS_FIELD, expected))
    return faults


def stage_package(package_uri: str | None, shared: Path) -> Path:
    """The package's copy in ``shared`` (made once), where the entry points run.

    Raises:
        InvalidModelItemError: the item names no package.
        InvalidPackageError: the package cannot be read.
    """
    from steps.package import stage_package as copy_package

    if not package_uri:
        raise InvalidModelItemError(
            "the model's item chooses one of its package's entry points but names no package "
            "(an asset with the role 'code')"
        )
    target = shared / PACKAGE_FOLDER
    if not (target / "MLproject").is_file():
        copy_package(Path(package_uri.removeprefix("file://")), target)
    return target


@functools.lru_cache(maxsize=8)
def _described(package: Path, entry_point: str) -> Any:
    """The package's copy described once (its MLproject read, its files hashed), not per block."""
    from steps.package import describe_package

    return describe_package(package, required=(entry_point,))


def _command(package: Path, entry_point: str, parameters: Mapping[str, str]) -> str:
    from steps.training import entry_point_command

    info = _described(package, entry_point)
    declared = set((info.entry_points.get(entry_point) or {}).get("parameters") or {})
    given = {k: v for k, v in parameters.items() if k in declared or k not in OPTIONAL_PARAMETERS}
    return entry_point_command(info, entry_point, given, package, check_paths=False)


def model_for_commands(model_uri: str, shared: Path) -> str:
    """The model as the entry point is given it: the folder of its files where they are on this
    machine, else downloaded once into ``shared`` (``../model``, relative to the package's copy,
    where the commands run), so that no block's run goes to the registry.

    Raises:
        GeomlopsError: the model cannot be downloaded.
    """
    from steps._package_predictor import download_model

    local = Path(model_uri.removeprefix("file://"))
    if local.is_dir():
        return str(local.resolve())
    download_model(model_uri, shared / MODEL_FOLDER)
    return f"../{MODEL_FOLDER}"


class OwnInference:
    """Predict blocks with the package's own inference entry point (see the module's docs).

    Args:
        worker: runs commands in the package's environment.
        entry_point: the entry point's name.
        package: the package's copy in ``shared``.
        shared: the folder this process and the worker share.
        model_uri: the model, as the entry point's ``model_uri``.
        crs: the imagery's CRS (each block's GeoTIFF is written in it).
    """

    def __init__(
        self, worker: Worker, *, entry_point: str, package: Path, shared: Path, model_uri: str, crs: str
    ) -> None:
        self.worker, self.entry_point, self.package = worker, entry_point, package
        self.shared, self.model_uri, self.crs = shared, model_uri, crs

    def __call__(
        self,
        stack: NDArray[Any],
        invalid: NDArray[np.bool_],
        transforms: Sequence[Any],
        ids: Sequence[str],
    ) -> NDArray[Any]:
        """The rasters the entry point writes for each block of ``stack`` ``(N, bands, H, W)``
        (their grids placed by ``transforms``), as ``(N, bands out, H, W)``. Where the block has
        no data (``invalid``: the imagery's no data, and beyond its edge) the values are set to
        0, so that whatever the package writes there (its own no-data value) is never read; a
        NaN elsewhere is 0 too. The raster's own no-data value is not read: a class mask often
        declares its background value as one.

        Raises:
            GeomlopsError: the entry point failed (its exit code and last error lines).
            PackageOutputError: it wrote nothing, or another grid than the image's (permanent:
                the package must be fixed).
        """
        answers = []
        for array, nodata, transform, block_id in zip(stack, invalid, transforms, ids, strict=True):
            answers.append(self._one(array, nodata, transform, block_id))
            if answers[-1].shape[0] != answers[0].shape[0]:
                raise PackageOutputError(
                    f"the package's {self.entry_point!r} entry point wrote {answers[-1].shape[0]} bands for "
                    f"block {block_id} and {answers[0].shape[0]} for block {ids[0]}; expected the same "
                    "bands for every block"
                )
        return np.stack(answers)

    def _one(self, array: NDArray[Any], invalid: NDArray[np.bool_], transform: Any, block_id: str) -> Any:
        import rasterio

        folder = _run_folder(self.shared, block_id)
        image, output = folder / "image.tif", folder / "output.tif"
        try:
            profile = {
                "driver": "GTiff",
                "count": array.shape[0],
                "height": array.shape[1],
                "width": array.shape[2],
                "dtype": array.dtype,
                "crs": self.crs,
                "transform": transform,
            }
            with rasterio.open(image, "w", **profile) as dst:
                dst.write(array)
                if invalid.any():  # where the imagery has no data, or lies beyond its edge
                    dst.write_mask(np.where(invalid, 0, 255).astype(np.uint8))
            relative = f"../{_RUNS_FOLDER}/{block_id}"
            parameters = {
                "model_uri": self.model_uri,
                "image": f"{relative}/image.tif",
                "output": f"{relative}/output.tif",
                "device": self.worker.device or "cpu",
            }
            command = _command(self.package, self.entry_point, parameters)
            what = f"the package's {self.entry_point!r} entry point on block {block_id}"
            self.worker.run(command, self.package.name, what)
            if not output.is_file():
                raise PackageOutputError(f"{what}: it exited 0 but wrote no {parameters['output']}")
            try:
                with rasterio.open(output) as src:
                    answer = src.read()
            except rasterio.errors.RasterioIOError as err:
                raise PackageOutputError(f"{what}: its output is not a readable raster ({err})") from err
            if answer.shape[1:] != array.shape[1:]:
                raise PackageOutputError(
                    f"{what}: it wrote {answer.shape[1]} x {answer.shape[2]} px (height x width) for an "
                    f"image of {array.shape[1]} x {array.shape[2]} px; the output must be on the image's grid"
                )
            answer[:, invalid] = 0
            if answer.dtype.kind == "f":  # a NaN the package left where the input was valid
                answer[np.isnan(answer)] = 0
            return answer
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _run_folder(shared: Path, name: str) -> Path:
    """A new, empty folder for one run of an entry point, which any user may write (the model's
    image may run as another user than geomlops' step)."""
    folder = shared / _RUNS_FOLDER / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    return folder


def own_postprocess(worker: Worker, *, entry_point: str, package: Path, shared: Path, mask: Path) -> Path:
    """Run the package's post-processing entry point on ``mask``; the GeoJSON it wrote.

    A copy of the mask is given (the package may open it for writing). The GeoJSON stays in
    ``shared``, for the caller to read before the folder goes.

    Raises:
        GeomlopsError: the entry point failed, or wrote no file.
    """
    folder = _run_folder(shared, "postprocess")
    shutil.copyfile(mask, folder / "mask.tif")
    relative = f"../{_RUNS_FOLDER}/postprocess"
    parameters = {"mask": f"{relative}/mask.tif", "output": f"{relative}/features.geojson"}
    what = f"the package's {entry_point!r} entry point"
    worker.run(_command(package, entry_point, parameters), package.name, what)
    written = folder / "features.geojson"
    if not written.is_file():
        raise PackageOutputError(f"{what}: it exited 0 but wrote no {parameters['output']}")
    return written


#: features read from a package's GeoJSON per batch handed to the writer
_BATCH = 10_000


def package_features(
    path: Path, crs: str, output: ModelOutput | None, *, what: str = "the GeoJSON the package wrote,"
) -> Iterator[tuple[NDArray[np.object_], NDArray[np.int64]]]:
    """The polygons of a package's GeoJSON in ``crs``, with their class values, in batches
    (the file is read whole first).

    A feature's class is its ``class`` property: a class value, or a class's name as the item
    lists it; without one, the item's only class that is not the background (0). Features of
    the background class are left out, as geomlops' own tracing leaves it out. Rings are
    oriented as RFC 7946 says (exteriors counter-clockwise: geodesic areas depend on it) and an
    invalid polygon (a ring crossing itself) is repaired to the area it outlines.

    Raises:
        PackageOutputError: the file is not a GeoJSON FeatureCollection, its ``crs`` member names
            no CRS, coordinates are not longitude/latitude while no ``crs`` member names
            another CRS, a geometry is not a polygon or is empty, or a class is not one of the
            item's (the feature's index and field named).
    """
    import shapely
    from pyproj import CRS, Transformer
    from pyproj.exceptions import CRSError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PackageOutputError(f"{what} {path}: not readable JSON ({err})") from err
    if not isinstance(data, Mapping) or data.get("type") != "FeatureCollection":
        raise PackageOutputError(f"{what} {path}: expected a GeoJSON FeatureCollection")
    named = None
    if "crs" in data:
        member = data["crs"]
        properties = member.get("properties") if isinstance(member, Mapping) else None
        named = properties.get("name") if isinstance(properties, Mapping) else None
        try:
            source = CRS.from_user_input(named)
        except (CRSError, TypeError) as err:
            raise PackageOutputError(
                f"{what} {path}: crs.properties.name: expected a CRS name such as 'EPSG:32645', got {named!r}"
            ) from err
    else:
        source = CRS.from_epsg(4326)
    to_crs = Transformer.from_crs(source, CRS.from_user_input(crs), always_xy=True)
    by_name = {c.name: c.value for c in (output.classes if output is not None else ())}
    values = set(by_name.values())
    foreground = sorted(v for v in values if v != 0)
    features = data.get("features") or []
    for start in range(0, len(features), _BATCH):
        geoms, classes = [], []
        for i, feature in enumerate(features[start : start + _BATCH], start):
            where = f"{what} {path}: features[{i}]"
            given = (feature.get("properties") or {}).get("class") if isinstance(feature, Mapping) else None
            value = _class_of(given, by_name, values, foreground, where)
            if value == 0:
                continue
            geom = _polygon(feature, where, lonlat=named is None)
            geoms.append(shapely.transform(geom, lambda xy: np.column_stack(to_crs.transform(*xy.T))))
            classes.append(value)
        out = np.empty(len(geoms), dtype=object)
        out[:] = geoms
        yield shapely.orient_polygons(out), np.asarray(classes, dtype=np.int64)


def _polygon(feature: Any, where: str, *, lonlat: bool) -> Any:
    """A feature's geometry: a non-empty (Multi)Polygon, repaired if invalid."""
    import shapely

    try:
        geom = shapely.geometry.shape(feature["geometry"])
    except (KeyError, TypeError, ValueError, AttributeError, shapely.errors.GEOSException) as err:
        raise PackageOutputError(f"{where}.geometry: not a GeoJSON geometry ({err})") from err
    if geom.geom_type not in ("Polygon", "MultiPolygon"):
        raise PackageOutputError(f"{where}.geometry: a {geom.geom_type}; expected a (Multi)Polygon")
    if geom.is_empty:
        raise PackageOutputError(f"{where}.geometry: empty; leave the feature out instead")
    if lonlat:
        west, south, east, north = geom.bounds
        if not (-180 <= west <= east <= 180 and -90 <= south <= north <= 90):
            raise PackageOutputError(
                f"{where}.geometry: coordinates {geom.bounds} are not longitude/latitude; "
                "RFC 7946 GeoJSON is in WGS84 (or name its CRS in a 'crs' member)"
            )
    if not geom.is_valid:
        parts = shapely.get_parts(shapely.make_valid(geom))
        geom = shapely.multipolygons([p for p in parts if p.geom_type == "Polygon"])
        if geom.is_empty:
            raise PackageOutputError(f"{where}.geometry: an invalid polygon that outlines no area")
    return geom


def _class_of(
    value: Any, by_name: Mapping[str, int], values: set[int], foreground: list[int], where: str
) -> int:
    if value is None:
        if len(foreground) == 1:
            return foreground[0]
        raise PackageOutputError(
            f"{where}.properties.class: missing, and the item lists {len(foreground)} classes that are "
            "not the background; give each feature its class value or name"
        )
    if isinstance(value, str) and value in by_name:
        return by_name[value]
    number = None
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            as_float = float(value)
        except ValueError:
            as_float = float("nan")
        if as_float.is_integer():
            number = int(as_float)
    if number is not None and (number in values or (not values and 0 <= number < 255)):
        return number
    known = ", ".join(f"{v} ({n})" for n, v in sorted(by_name.items(), key=lambda kv: kv[1])) or "none"
    raise PackageOutputError(
        f"{where}.properties.class: {value!r} is not one of the item's classes ({known})"
    )
