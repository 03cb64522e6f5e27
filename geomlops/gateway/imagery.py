"""Imagery the web app shows: what is registered, and XYZ web-mercator tiles rendered from it.

Registered imagery is every GeoTIFF asset of the catalogue's dataset items and, per dataset
folder of the data repository, the image its ``dataset.json`` names (else every GeoTIFF in it):
the embedded default's demo scene is one.
Tiles are cut from the imagery itself with rio-tiler: red, green and blue when the bands say
which they are (a band's description, its ``common_name`` tag, or the ``eo:common_name`` a
catalogued model gives the band's name), else the first band in grey; each band stretched
between its 2nd and 98th percentiles; transparent where there is no data and outside.
"""

from __future__ import annotations

import hashlib
import io
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from geomlops.errors import ItemNotFoundError, ParameterError

#: side of a tile in pixels
TILE_SIZE = 256
#: the zoom levels tiles are rendered at
MAX_ZOOM = 22
_RGB = ("red", "green", "blue")


@dataclass(frozen=True)
class Imagery:
    """One registered imagery: an id, where it is and what it holds."""

    id: str
    title: str
    href: str
    bbox: list[float]
    bands: list[str]
    common_names: list[str | None]


def imagery_id(path: str) -> str:
    """A stable id for imagery at ``path`` (its file name and a digest of the full path)."""
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(path).stem)[:40] or "imagery"
    return f"{stem}-{hashlib.sha256(path.encode()).hexdigest()[:10]}"


def band_common_names(catalogue_items: list[dict[str, Any]]) -> dict[str, str]:
    """Band name → ``eo:common_name`` as the catalogued models declare their bands."""
    names: dict[str, str] = {}
    for item in catalogue_items:
        for band in (item.get("properties") or {}).get("bands") or []:
            if isinstance(band, dict) and band.get("name") and band.get("eo:common_name"):
                names.setdefault(str(band["name"]), str(band["eo:common_name"]))
    return names


@lru_cache(maxsize=64)
def _describe(
    path: str, mtime: float, known: tuple[tuple[str, str], ...]
) -> tuple[list[float], list[str], list[str | None]]:
    import rasterio
    from rasterio.warp import transform_bounds

    common = dict(known)
    with rasterio.open(path) as src:
        if src.crs is None:
            raise ParameterError(f"imagery {path}: no CRS; expected a georeferenced GeoTIFF")
        bbox = [round(v, 7) for v in transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)]
        bands = [src.descriptions[i] or f"band {i + 1}" for i in range(src.count)]
        names: list[str | None] = []
        for i, band in enumerate(bands):
            tag = src.tags(i + 1).get("common_name") or src.tags(i + 1).get("eo:common_name")
            guess = tag or common.get(band) or (band.lower() if band.lower() in _RGB else None)
            names.append(guess)
        if not all(c in names for c in _RGB):  # else the file's own colour interpretation (drone imagery)
            colours = [c.name for c in src.colorinterp]
            if all(c in colours for c in _RGB):
                # only bands named nothing else: a catalogued common name stands
                names = [c if c in _RGB and n is None else n for c, n in zip(colours, names, strict=True)]
    return bbox, bands, names


def describe(path: str, common: dict[str, str]) -> tuple[list[float], list[str], list[str | None]]:
    """WGS 84 bbox, band names and common names (None when unknown) of the GeoTIFF at ``path``.

    Raises:
        ParameterError: the file cannot be read as georeferenced imagery.
    """
    import rasterio

    try:
        return _describe(path, Path(path).stat().st_mtime, tuple(sorted(common.items())))
    except (OSError, rasterio.errors.RasterioError) as err:
        raise ParameterError(f"imagery {path}: cannot be read as a GeoTIFF ({err})") from err


def _dataset_images(folder: Path) -> list[Path]:
    """The imagery of a dataset folder: the file its ``dataset.json`` names as ``files.image``,
    else every GeoTIFF directly in it."""
    import json

    described = folder / "dataset.json"
    if described.is_file():
        try:
            image = (json.loads(described.read_text(encoding="utf-8")).get("files") or {}).get("image")
        except (ValueError, AttributeError):
            image = None
        if isinstance(image, str) and (folder / image).is_file():
            return [folder / image]
    return sorted(p for p in folder.glob("*.tif") if p.is_file()) if folder.is_dir() else []


def registered(data_repo: Path, dataset_items: list[dict[str, Any]], common: dict[str, str]) -> list[Imagery]:
    """The registered imagery: GeoTIFF assets of dataset items and GeoTIFFs in dataset folders."""
    found: dict[str, tuple[str, str]] = {}
    for item in dataset_items:
        for name, asset in (item.get("assets") or {}).items():
            href = str(asset.get("href", "")).removeprefix("file://")
            if "tiff" in str(asset.get("type", "")) and Path(href).is_absolute() and Path(href).is_file():
                found.setdefault(href, (f"{item['id']} {name}", str(item["id"])))
    datasets = data_repo / "datasets"
    for folder in sorted(datasets.iterdir()) if datasets.is_dir() else []:
        for path in _dataset_images(folder):
            found.setdefault(str(path), (f"{folder.name}/{path.name}", ""))
    out = []
    for href, (title, _item) in found.items():
        try:
            bbox, bands, names = describe(href, common)
        except ParameterError:
            continue
        out.append(Imagery(imagery_id(href), title, href, bbox, bands, names))
    return out


def find(imagery: list[Imagery], wanted: str) -> Imagery:
    """The registered imagery whose id is ``wanted``.

    Raises:
        ItemNotFoundError: none has that id.
    """
    for one in imagery:
        if one.id == wanted:
            return one
    raise ItemNotFoundError(
        f"imagery_id {wanted!r}: no such registered imagery (GET /api/v1/imagery lists them)"
    )


def readable_roots(imagery_roots: list[Path], home: Path, data_repo: str) -> list[Path]:
    """The folders whose rasters the gateway reads by path (map tiles, plans, runs, on-demand
    inference): the configured imagery roots, else the work folder; and the local data
    repository, where registered imagery lives."""
    roots = list(imagery_roots) or [home]
    if "://" not in data_repo and not any(
        Path(data_repo).resolve().is_relative_to(r.resolve()) for r in roots
    ):
        roots.append(Path(data_repo))
    return roots


def check_readable(path: str, roots: list[Path], what: str = "path") -> str:
    """``path`` resolved, when it is an existing file under one of ``roots``.

    Raises:
        ParameterError: a relative path, no such file, or outside every root (names them).
    """
    if not Path(path).is_absolute():
        raise ParameterError(f"{what} {path!r}: expected an absolute path on the gateway's machine")
    resolved = Path(path).resolve()
    if not any(resolved.is_relative_to(root.resolve()) for root in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise ParameterError(
            f"{what} {path!r}: outside the folders the gateway reads imagery from ({allowed}; "
            "GEOMLOPS_GATEWAY_IMAGERY_ROOTS)"
        )
    if not resolved.is_file():
        raise ParameterError(f"{what} {path!r}: no such file on the gateway's machine")
    return str(resolved)


def _rgb_indexes(names: list[str | None]) -> tuple[int, ...]:
    if all(c in names for c in _RGB):
        return tuple(names.index(c) + 1 for c in _RGB)
    return (1,)


_IMPORTING = threading.Lock()


def _tiler() -> tuple[Any, Any, Any]:
    """rio-tiler's ``Reader``, ``render`` and ``TileOutsideBounds``, imported by one thread at a
    time: the first tile requests of a fresh server, each in its own thread, could otherwise see
    rio-tiler's modules half initialised (ImportError, a 500 for the tile)."""
    with _IMPORTING:
        from rio_tiler.errors import TileOutsideBounds
        from rio_tiler.io import Reader
        from rio_tiler.utils import render
    return Reader, render, TileOutsideBounds


@lru_cache(maxsize=64)
def _stretch(path: str, mtime: float, indexes: tuple[int, ...]) -> tuple[tuple[float, float], ...]:
    Reader, _, _ = _tiler()

    with Reader(path) as src:
        preview = src.preview(indexes=indexes, max_size=512)
    ranges = []
    for band in range(len(indexes)):
        data = np.ma.masked_invalid(preview.array[band]).compressed()
        if data.size == 0:
            ranges.append((0.0, 1.0))
            continue
        low, high = np.percentile(data, [2, 98])
        ranges.append((float(low), float(high) if high > low else float(low) + 1.0))
    return tuple(ranges)


@lru_cache(maxsize=1)
def empty_tile() -> bytes:
    """A fully transparent PNG tile."""
    _, render, _ = _tiler()
    return bytes(
        render(np.zeros((1, TILE_SIZE, TILE_SIZE), "uint8"), np.zeros((TILE_SIZE, TILE_SIZE), "uint8"))
    )


def check_tile(z: int, x: int, y: int) -> None:
    """Check XYZ tile coordinates.

    Raises:
        ParameterError: z outside 0..MAX_ZOOM, or x/y outside 0..2^z-1 (names the field).
    """
    if not 0 <= z <= MAX_ZOOM:
        raise ParameterError(f"z {z}: expected a zoom level from 0 to {MAX_ZOOM}")
    for name, value in (("x", x), ("y", y)):
        if not 0 <= value < 2**z:
            raise ParameterError(f"{name} {value}: expected 0 to {2**z - 1} at zoom {z}")


def render_tile(path: str, names: list[str | None], z: int, x: int, y: int) -> bytes:
    """The PNG of tile z/x/y (web mercator) of the GeoTIFF at ``path``."""
    Reader, render, TileOutsideBounds = _tiler()
    check_tile(z, x, y)
    indexes = _rgb_indexes(names)
    ranges = _stretch(path, Path(path).stat().st_mtime, indexes)
    with Reader(path) as src:
        try:
            image = src.tile(x, y, z, tilesize=TILE_SIZE, indexes=indexes)
        except TileOutsideBounds:
            return empty_tile()
    data = np.ma.masked_invalid(image.array.astype("float64"))
    valid = ~np.ma.getmaskarray(data).any(axis=0)
    out = np.zeros(data.shape, "uint8")
    for band, (low, high) in enumerate(ranges):
        scaled = (data[band].filled(low) - low) / (high - low) * 255.0
        out[band] = np.clip(scaled, 0, 255).astype("uint8")
    if len(indexes) == 1:
        out = out[:1]
    buffer = io.BytesIO(render(out, (valid * 255).astype("uint8"), img_format="PNG"))
    return buffer.getvalue()
