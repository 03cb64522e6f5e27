"""Imagery and building footprints for a bounding box -> the chips layout geomlops evaluates.

Sources, each remote or local:

- imagery: ``--bbox`` alone finds the newest OpenAerialMap image there through its API and
  downloads its zoom-``--zoom`` tiles; ``--oam-image ID`` names the image; ``--tiles TEMPLATE``
  gives an XYZ template (``https://…/{z}/{x}/{y}.png`` or ``file:///folder/OAM-{x}-{y}-{z}.tif``);
  ``--imagery DIR`` takes georeferenced chips as they are (every ``*.tif``);
- footprints: OpenStreetMap buildings in the chips' extent from the Overpass API
  (``--overpass-url``), or ``--footprints`` (a GeoJSON file or folder of ``*.geojson``).

Writes ``chips/<name>.tif`` (RGB GeoTIFF), ``labels/<name>.tif`` (uint8: 1 building, 0 not),
``test.txt`` (the held-out chips), ``footprints.geojson`` and ``dataset.json`` into ``--output``,
which is written whole or not at all (built beside it, renamed into place).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
from rasterio.io import MemoryFile
from rasterio.transform import from_bounds
from shapely.geometry import box, mapping, shape

from building_footprints import fetch as remote
from building_footprints.data import BANDS, CHIPS, CLASSES, IGNORE_VALUE, LABELS, METADATA, TEST_LIST
from building_footprints.tiles import parse_bbox, tile_bounds, tiles_in_bbox

LICENCE = "imagery: OpenAerialMap (CC BY 4.0); footprints: (c) OpenStreetMap contributors (ODbL 1.0)"
PROFILE = {"driver": "GTiff", "compress": "deflate", "tiled": True, "blockxsize": 256, "blockysize": 256}


def _write_chip(path: Path, rgb: np.ndarray, crs: Any, transform: Any) -> None:
    height, width = rgb.shape[1:]
    tiled = height % 16 == 0 and width % 16 == 0 and height >= 256 and width >= 256
    profile = {**PROFILE, "tiled": tiled} if tiled else {"driver": "GTiff", "compress": "deflate"}
    with rasterio.open(path, "w", height=height, width=width, count=3, dtype="uint8", crs=crs,
                       transform=transform, photometric="RGB", **profile) as dst:  # fmt: skip
        dst.write(rgb)
        dst.descriptions = BANDS


def tiles_to_chips(
    template: str, bbox: tuple[float, float, float, float], zoom: int, chips: Path
) -> list[str]:
    """Download the tiles of ``template`` covering ``bbox``; each becomes one EPSG:4326 chip.

    Tiles the server does not have (outside the image) and fully transparent ones are skipped.
    """
    names = []
    for x, y in tiles_in_bbox(bbox, zoom):
        try:
            body = remote.fetch(remote.tile_url(template, x, y, zoom))
        except remote.TileMissing:
            continue
        with MemoryFile(body) as memory, memory.open() as src:
            pixels = src.read()
        if pixels.shape[0] == 4 and not pixels[3].any():
            continue  # transparent: outside the image
        if pixels.shape[0] < 3:
            pixels = np.repeat(pixels[:1], 3, axis=0)
        name = f"OAM-{x}-{y}-{zoom}.tif"
        height, width = pixels.shape[1:]
        _write_chip(
            chips / name, pixels[:3], "EPSG:4326", from_bounds(*tile_bounds(x, y, zoom), width, height)
        )
        names.append(name)
    return names


def copy_chips(imagery: Path, chips: Path) -> list[str]:
    """Local georeferenced images (every ``*.tif`` of a folder) rewritten as RGB GeoTIFF chips."""
    sources = sorted(imagery.glob("*.tif")) if imagery.is_dir() else []
    if not sources:
        raise FileNotFoundError(f"imagery: {imagery} is not a folder of *.tif images")
    names = []
    for path in sources:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise ValueError(f"imagery: {path} has no georeference (CRS)")
            if src.count < 3:
                raise ValueError(f"imagery: {path} has {src.count} band(s), expected RGB")
            _write_chip(chips / path.name, src.read([1, 2, 3]), src.crs, src.transform)
        names.append(path.name)
    return names


def chips_bbox(chips: Path, names: Iterable[str]) -> tuple[float, float, float, float]:
    """The chips' extent in degrees."""
    bounds = []
    for name in names:
        with rasterio.open(chips / name) as src:
            bounds.append(rasterio.warp.transform_bounds(src.crs, "EPSG:4326", *src.bounds))
    array = np.array(bounds)
    return (
        float(array[:, 0].min()),
        float(array[:, 1].min()),
        float(array[:, 2].max()),
        float(array[:, 3].max()),
    )


def burn_labels(
    chips: Path, labels: Path, names: Iterable[str], features: list[dict[str, Any]]
) -> dict[str, int]:
    """One uint8 label raster per chip: 1 inside a footprint (pixel centres), 0 elsewhere."""
    geometries = [shape(f["geometry"]) for f in features]
    counts = {}
    for name in names:
        with rasterio.open(chips / name) as src:
            crs, transform, shape_ = src.crs, src.transform, (src.height, src.width)
            extent = box(*rasterio.warp.transform_bounds(src.crs, "EPSG:4326", *src.bounds))
        inside = [g for g in geometries if g.intersects(extent)]
        if crs.to_epsg() != 4326:
            inside = [shape(rasterio.warp.transform_geom("EPSG:4326", crs, mapping(g))) for g in inside]
        mask = np.zeros(shape_, np.uint8)
        if inside:
            mask = rasterio.features.rasterize(((g, 1) for g in inside), out_shape=shape_,
                                               transform=transform, fill=0, dtype="uint8")  # fmt: skip
        with rasterio.open(labels / name, "w", height=shape_[0], width=shape_[1], count=1, dtype="uint8",
                           crs=crs, transform=transform, nodata=IGNORE_VALUE, **PROFILE) as dst:  # fmt: skip
            dst.write(mask, 1)
        counts[name] = int(mask.sum())
    return counts


def preprocess(
    output: Path,
    *,
    bbox: tuple[float, float, float, float] | None = None,
    imagery: Path | None = None,
    tiles: str = "",
    oam_image: str = "",
    oam_api: str = remote.OAM_API,
    zoom: int = 19,
    footprints: Path | None = None,
    overpass_url: str = remote.OVERPASS_API,
    test_fraction: float = 0.25,
    seed: int = 42,
) -> Path:
    """Write the dataset; see the module's docstring. Returns ``output``."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected 0 <= value < 1, got {test_fraction}")
    if imagery is None and bbox is None:
        raise ValueError("bbox: needed to download imagery (or give --imagery DIR of local chips)")
    output = output.resolve()
    if output.exists() and any(output.iterdir()):
        raise FileExistsError(f"output: {output} exists and is not empty")
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        (work / CHIPS).mkdir()
        (work / LABELS).mkdir()
        source: dict[str, Any] = {}
        if imagery is not None:
            names = copy_chips(imagery, work / CHIPS)
            source["imagery"] = str(imagery)
        else:
            assert bbox is not None
            if tiles:
                source["imagery"] = {"tiles": tiles}
            else:
                image = (
                    remote.oam_image(oam_image, api=oam_api)
                    if oam_image
                    else remote.search_oam(bbox, api=oam_api)
                )
                tiles = image.tiles
                source["imagery"] = image.as_record()
            names = tiles_to_chips(tiles, bbox, zoom, work / CHIPS)
            if not names:
                raise remote.FetchError(f"no imagery tile of {tiles} covers bbox {bbox} at zoom {zoom}")
        extent = bbox or chips_bbox(work / CHIPS, names)
        if footprints is not None:
            features = remote.read_footprints(footprints)
            source["footprints"] = str(footprints)
        else:
            features = remote.fetch_osm_buildings(extent, api=overpass_url)
            source["footprints"] = {"overpass": overpass_url, "bbox": list(extent)}
        (work / "footprints.geojson").write_text(
            json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8"
        )
        counts = burn_labels(work / CHIPS, work / LABELS, names, features)
        ordered = sorted(names)
        random.Random(seed).shuffle(ordered)
        held_out = sorted(ordered[: round(len(ordered) * test_fraction)])
        (work / TEST_LIST).write_text("".join(f"{n}\n" for n in held_out), encoding="utf-8")
        record = {
            "name": "building-footprints",
            "classes": list(CLASSES),
            "positive_class": "building",
            "ignore_value": IGNORE_VALUE,
            "bands": list(BANDS),
            "chips": len(names),
            "test_chips": len(held_out),
            "building_pixels": sum(counts.values()),
            "footprints": len(features),
            "source": source,
            "licence": LICENCE,
        }
        (work / METADATA).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        if output.exists():
            output.rmdir()
        work.rename(output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--bbox", default="", help="west,south,east,north in degrees")
    parser.add_argument(
        "--imagery", default="", help="folder of georeferenced RGB chips instead of a download"
    )
    parser.add_argument("--tiles", default="", help="XYZ tile template instead of an OAM search")
    parser.add_argument("--oam-image", default="", help="OpenAerialMap image id instead of a search")
    parser.add_argument("--oam-api", default=remote.OAM_API)
    parser.add_argument("--zoom", type=int, default=19)
    parser.add_argument("--footprints", default="", help="GeoJSON file or folder instead of Overpass")
    parser.add_argument("--overpass-url", default=remote.OVERPASS_API)
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    try:
        done = preprocess(
            args.output,
            bbox=parse_bbox(args.bbox) if args.bbox else None,
            imagery=Path(args.imagery) if args.imagery else None,
            tiles=args.tiles,
            oam_image=args.oam_image,
            oam_api=args.oam_api,
            zoom=args.zoom,
            footprints=Path(args.footprints) if args.footprints else None,
            overpass_url=args.overpass_url,
            test_fraction=args.test_fraction,
            seed=args.seed,
        )
    except (remote.FetchError, ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"preprocess: {err}", file=sys.stderr)
        return 2
    print(f"dataset written to {done}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
