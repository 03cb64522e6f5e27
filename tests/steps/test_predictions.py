"""Publishing predictions: features streamed batch by batch to GeoParquet and GeoJSON, with lineage."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas
import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
import shapely.geometry
from affine import Affine

from geomlops.errors import VectorizeError
from postprocessing.io import FeatureWriter
from steps.batch import BatchPlan, plan_batch, save_plan
from steps.predict import NODATA_CLASS
from steps.predictions import Lineage, publish_predictions

CRS = "EPSG:32616"
TRANSFORM = Affine(30.0, 0.0, 460000.0, 0.0, -30.0, 3400000.0)
LINEAGE = Lineage(model="cloud-mask", model_version="3", run_id="0123456789abcdef")


def _mask() -> np.ndarray:
    """Classes built to cross 8-px block lines: a region spanning every block row, a ring with a
    hole cut by block edges, two classes side by side, no data, and background everywhere else."""
    mask = np.zeros((30, 40), np.uint8)
    mask[1:29, 3:5] = 1  # crosses every block row
    mask[6:18, 6:18] = 1
    mask[9:15, 9:15] = 0  # a hole cut by the block lines at 8 and 16
    mask[2:5, 20:30] = 2
    mask[5:7, 20:30] = 1  # shares an edge with the class-2 region
    mask[20:26, 30:38] = NODATA_CLASS
    mask[25, 25] = 1  # a single pixel
    return mask


def _raster(path: Path, data: np.ndarray, nodata: int | None = None) -> Path:
    count = 1 if data.ndim == 2 else data.shape[0]
    profile = {
        "driver": "GTiff",
        "height": data.shape[-2],
        "width": data.shape[-1],
        "count": count,
        "dtype": str(data.dtype),
        "crs": CRS,
        "transform": TRANSFORM,
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data if data.ndim == 3 else data[None])
    return path


def _scene(tmp_path: Path, block_size: int) -> tuple[Path, BatchPlan]:
    imagery = tmp_path / "image.tif"
    if not imagery.exists():
        rng = np.random.default_rng(0)
        _raster(imagery, rng.integers(0, 200, (4, 30, 40), dtype=np.uint8))
        _raster(tmp_path / "mask.tif", _mask(), nodata=NODATA_CLASS)
    return tmp_path / "mask.tif", plan_batch(str(imagery), None, block_size=block_size, group_size=2)


def _publish(tmp_path: Path, block_size: int, name: str) -> Path:
    mask, plan = _scene(tmp_path, block_size)
    out = tmp_path / name
    out.mkdir()
    catalog = str(tmp_path / "catalog" / "catalog.json")
    result = publish_predictions(
        mask, out, plan, LINEAGE, area=name, catalog=catalog, scheduler="synchronous"
    )
    assert result.geoparquet == str(out / "predictions.parquet")
    return out


def _features(frame: geopandas.GeoDataFrame) -> list[tuple[int, float, bytes]]:
    return sorted(zip(frame["class"], frame["area"], frame.geometry.normalize().to_wkb(), strict=True))


def test_streamed_features_equal_one_block_and_carry_lineage(tmp_path: Path) -> None:
    small, whole = _publish(tmp_path, 8, "small"), _publish(tmp_path, 64, "whole")
    a = geopandas.read_parquet(small / "predictions.parquet")
    b = geopandas.read_parquet(whole / "predictions.parquet")
    assert list(a.columns) == [
        "class",
        "area",
        "geometry",
        "class_name",
        "block_id",
        "area_method",
        "model",
        "model_version",
        "mlflow_run_id",
    ]
    assert _features(a) == _features(b)  # seam-free: the block size changes nothing
    assert sorted(a["class"]) == [1, 1, 1, 1, 2]  # the column, the ring, the strip, the pixel; class 2
    assert a.crs.to_epsg() == 32616 and a.geometry.is_valid.all()
    ring = a[a["area"] == (144 - 36) * 900.0]
    assert len(ring) == 1 and len(ring.geometry.iloc[0].interiors) == 1
    assert set(a["model"]) == {"cloud-mask"} and set(a["model_version"]) == {"3"}
    assert set(a["mlflow_run_id"]) == {"0123456789abcdef"}
    # the block holding the first pixel (scan order) of each feature
    assert dict(zip(a["area"], a["block_id"], strict=True))[900.0] == "r3c3"
    assert dict(zip(a["area"], a["block_id"], strict=True))[28 * 2 * 900.0] == "r0c0"
    assert set(b["block_id"]) == {"r0c0"}
    geo = json.loads(pq.ParquetFile(small / "predictions.parquet").schema_arrow.metadata[b"geo"])
    assert geo["columns"]["geometry"]["bbox"] == list(a.total_bounds)
    assert geo["columns"]["geometry"]["geometry_types"] == ["Polygon"]
    # GeoJSON: the same features and properties as GeoDataFrame.to_json gives them, every
    # coordinate the same double, WGS84, with RFC 7946's orientation: shells counter-clockwise,
    # holes clockwise. (Not its bytes: the one writer is compact and lets GEOS print the
    # coordinates, which round-trip but are not always Python's shortest repr.)
    text = (small / "predictions.geojson").read_text()
    wgs84 = a.to_crs("EPSG:4326")
    wgs84.geometry = shapely.orient_polygons(wgs84.geometry.array, exterior_cw=False)
    assert json.loads(text) == json.loads(wgs84.to_json(drop_id=True))
    assert text.startswith('{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"class":')
    assert text.endswith("]}\n") and ", " not in text and '": ' not in text
    polygons = [shapely.geometry.shape(f["geometry"]) for f in json.loads(text)["features"]]
    assert all(p.exterior.is_ccw and not any(h.is_ccw for h in p.interiors) for p in polygons)
    assert sum(len(p.interiors) for p in polygons) == 1  # the ring's hole was checked too
    item = json.loads(
        (
            tmp_path / "catalog" / "predictions" / "cloud-mask-v3-small" / "cloud-mask-v3-small.json"
        ).read_text()
    )
    assert item["properties"]["geomlops:features"] == 5
    assert item["properties"]["geomlops:features_by_class"] == {"1": 4, "2": 1}
    assert (small / "quicklook.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_publishing_again_gives_the_same_bytes(tmp_path: Path) -> None:
    first, second = _publish(tmp_path, 8, "first"), _publish(tmp_path, 8, "second")
    for name in ("predictions.parquet", "predictions.geojson", "quicklook.png"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_a_corrupt_mask_leaves_no_outputs(tmp_path: Path) -> None:
    mask, plan = _scene(tmp_path, 8)
    data = mask.read_bytes()
    mask.write_bytes(data[: len(data) // 2])  # truncated
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(VectorizeError, match=r"mask\.tif: block r\d+c\d+ cannot be read"):
        publish_predictions(
            mask,
            out,
            plan,
            LINEAGE,
            area="x",
            catalog=str(tmp_path / "cat" / "catalog.json"),
            scheduler="synchronous",
        )
    assert list(out.iterdir()) == []
    assert not (tmp_path / "cat" / "predictions").exists()


def test_a_batch_the_files_cannot_take_leaves_no_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import steps.predictions as predictions

    # the files are written in a thread of their own, behind the merge and the tiles: its error
    # is the step's, and neither the files, the quicklook nor the tiles are left
    real, written = predictions._write_and_draw, []

    def write(files: FeatureWriter, picture: object, geoms: np.ndarray, *rest: object) -> None:
        if written:
            raise VectorizeError("predictions.parquet: no space left on the device")
        written.append(len(geoms))
        real(files, picture, geoms, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(predictions, "_write_and_draw", write)
    mask, plan = _scene(tmp_path, 8)
    out = tmp_path / "out"
    out.mkdir()
    catalog = tmp_path / "cat" / "catalog.json"
    with pytest.raises(VectorizeError, match="no space left"):
        publish_predictions(mask, out, plan, LINEAGE, area="x", catalog=str(catalog), scheduler="synchronous")
    assert len(written) == 1  # the first row of blocks was written, then the second failed
    assert list(out.iterdir()) == []
    assert not (tmp_path / "cat" / "predictions").exists()
    # an earlier archive is not replaced by one whose files failed
    (out / "predictions.pmtiles").write_bytes(b"earlier")
    with pytest.raises(VectorizeError, match="no space left"):
        publish_predictions(mask, out, plan, LINEAGE, area="x", catalog=str(catalog), scheduler="synchronous")
    assert [p.name for p in out.iterdir()] == ["predictions.pmtiles"]
    assert (out / "predictions.pmtiles").read_bytes() == b"earlier"


def test_tiles_that_cannot_be_cut_leave_the_earlier_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import postprocessing.tiles as tiles

    # the tiles are cut while the files and the quicklook are still being written beside them:
    # when cutting fails, none of the new outputs is moved into place
    def fail(*args: object, **kwargs: object) -> None:
        raise VectorizeError("predictions.pmtiles: no space left on the device")

    monkeypatch.setattr(tiles, "write_prediction_tiles", fail)
    mask, plan = _scene(tmp_path, 8)
    out = tmp_path / "out"
    out.mkdir()
    earlier = {
        name: name.encode() for name in ("predictions.parquet", "predictions.geojson", "quicklook.png")
    }
    for name, data in earlier.items():
        (out / name).write_bytes(data)
    catalog = tmp_path / "cat" / "catalog.json"
    with pytest.raises(VectorizeError, match="no space left"):
        publish_predictions(mask, out, plan, LINEAGE, area="x", catalog=str(catalog), scheduler="synchronous")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier
    assert not (tmp_path / "cat" / "predictions").exists()


def test_files_appear_only_when_closed_cleanly(tmp_path: Path) -> None:
    import shapely

    parquet, geojson = tmp_path / "p.parquet", tmp_path / "p.geojson"
    lineage = {"model": "m", "model_version": "1", "mlflow_run_id": "r"}
    geoms = np.array([shapely.box(460000 + 30 * i, 3399000, 460030 + 30 * i, 3399030) for i in range(5)])
    with (
        pytest.raises(RuntimeError),
        FeatureWriter((parquet, geojson), CRS, extra=("block_id",), shared=lineage) as files,
    ):
        files.write(geoms, np.ones(5, np.int64), np.full(5, 900.0), block_id=["r0c0"] * 5)
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    # row groups of two features: the output is streamed, and reads back whole
    with FeatureWriter(
        (parquet, geojson), CRS, extra=("block_id",), shared=lineage, row_group_rows=2
    ) as files:
        for batch in (geoms[:2], geoms[2:4], geoms[4:]):
            n = len(batch)
            files.write(batch, np.ones(n, np.int64), np.full(n, 900.0), block_id=["r0c0"] * n)
    assert pq.ParquetFile(parquet).num_row_groups == 3
    assert len(geopandas.read_parquet(parquet)) == len(json.loads(geojson.read_text())["features"]) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.geojson", "p.parquet"]


def test_batch_inference_and_vectorize_write_through_the_one_writer(tmp_path: Path) -> None:
    import re

    from postprocessing._feature_files import COMPRESSION
    from postprocessing.vectorize import vectorize_to_file

    published = _publish(tmp_path, 8, "published")
    # the same features from ``geomlops vectorize``: the background made nodata, as publishing skips it
    mask = _mask()
    mask[mask == 0] = NODATA_CLASS
    foreground = _raster(tmp_path / "foreground.tif", mask, nodata=NODATA_CLASS)
    vectorized = tmp_path / "vectorized"
    vectorized.mkdir()
    for suffix in ("parquet", "geojson"):
        vectorize_to_file(foreground, vectorized / f"v.{suffix}", block_size=8, scheduler="synchronous")

    files = [pq.ParquetFile(published / "predictions.parquet"), pq.ParquetFile(vectorized / "v.parquet")]
    geo = [json.loads(f.schema_arrow.metadata[b"geo"]) for f in files]
    assert geo[0] == geo[1]  # GeoParquet 1.1, the same CRS and the same bounding box
    assert geo[0]["version"] == "1.1.0" and len(geo[0]["columns"]["geometry"]["bbox"]) == 4
    assert geo[0]["columns"]["geometry"]["bbox"] == list(
        geopandas.read_parquet(vectorized / "v.parquet").total_bounds
    )
    for f in files:
        codecs = {
            f.metadata.row_group(g).column(c).compression
            for g in range(f.num_row_groups)
            for c in range(f.metadata.num_columns)
        }
        assert codecs == {COMPRESSION.upper()}
    tables = [f.read() for f in files]
    for name in ("class", "area", "geometry"):  # the same features, WKB byte for byte
        assert tables[0][name].to_pylist() == tables[1][name].to_pylist()

    # GeoJSON: the same bytes, but for the properties only batch inference adds
    lineage = ',"model":"cloud-mask","model_version":"3","mlflow_run_id":"0123456789abcdef"'
    text = (published / "predictions.geojson").read_text()
    block_id = r',"class_name":"[^"]*","block_id":"r\d+c\d+"(,"area_method":"planar")'
    stripped, n = re.subn(block_id + re.escape(lineage), r"\1", text)
    assert n == len(tables[0]) == 5
    assert stripped == (vectorized / "v.geojson").read_text()


@pytest.mark.parametrize("width", [40, 2500])  # canvas cell = one pixel; = two pixels (decimated)
def test_quicklook_burns_outlines_into_a_canvas_of_fixed_size(tmp_path: Path, width: int) -> None:
    import matplotlib.pyplot as plt
    import shapely.geometry

    from steps.predictions import _Quicklook

    imagery = _raster(tmp_path / "wide.tif", np.zeros((4, 40, width), np.uint8))
    plan = plan_batch(str(imagery), None, block_size=64, group_size=2)
    picture = _Quicklook(plan)
    scale = 1 if width < 1024 else 2
    assert picture.outline.shape == (40 // scale, width // scale)
    # a 12 x 12 pixel box whose corners are pixels (6, 6) and (18, 18), in the imagery's CRS
    x0, y0 = TRANSFORM @ (6, 6)
    x1, y1 = TRANSFORM @ (18, 18)
    box = shapely.geometry.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    many = [box] * 5_000  # a country's worth of batches keeps nothing but the canvas
    for _ in range(3):
        picture.add(np.array(many, dtype=object))
    assert plt.get_fignums() == []  # no figure, no artists held until the PNG is saved
    lo, hi = 6 // scale, 18 // scale
    expected = np.zeros_like(picture.outline)
    expected[lo : hi + 1, [lo, hi]] = expected[[lo, hi], lo : hi + 1] = True  # the cells its edges cross
    assert np.array_equal(picture.outline, expected)
    picture.save(tmp_path / "q.png", "title")
    assert (tmp_path / "q.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plt.get_fignums() == []


def test_the_quicklook_outlines_the_area_of_interest(tmp_path: Path) -> None:
    """Dashed in the web app's colour, over the imagery; nothing of it without an area."""
    import matplotlib.image
    from rasterio.warp import transform_bounds

    from steps.predictions import _Quicklook

    imagery = _raster(tmp_path / "scene.tif", np.full((3, 120, 160), 90, np.uint8))
    w, s, e, n = transform_bounds(CRS, "EPSG:4326", *(TRANSFORM @ (0, 120)), *(TRANSFORM @ (160, 0)))
    box = [w + (e - w) * 0.25, s + (n - s) * 0.25, w + (e - w) * 0.75, s + (n - s) * 0.75]
    aoi = {"type": "Polygon", "coordinates": [[[box[0], box[1]], [box[2], box[1]], [box[2], box[3]],
                                               [box[0], box[3]], [box[0], box[1]]]]}  # fmt: skip
    blue = np.array([0x1F, 0x6F, 0xEB]) / 255
    drawn = {}
    for name, area in (("with", aoi), ("without", None)):
        picture = _Quicklook(plan_batch(str(imagery), area, block_size=64, group_size=2))
        picture.save(tmp_path / f"{name}.png", name)
        pixels = matplotlib.image.imread(tmp_path / f"{name}.png")[..., :3]
        drawn[name] = int((np.abs(pixels - blue).max(axis=-1) < 0.08).sum())
    assert drawn["without"] == 0 and drawn["with"] > 100, drawn


def test_a_buildings_item_squares_the_merged_polygons_keeping_class_and_block() -> None:
    """The post-processor the model's MLM output names finishes each whole polygon in publishing:
    a skewed pixel-traced outline in longitude/latitude comes out right-angled, its parts keep the
    class and block of what they came from, and areas are re-measured in m² (geodesic)."""
    import math

    import numpy as np
    from shapely import affinity
    from shapely.geometry import box

    from postprocessing.finalize import finish_each, geometry_areas
    from postprocessing.registry import resolve_finisher

    output = {
        "name": "building probability",
        "tasks": ["semantic-segmentation"],
        "post_processing_function": {"format": "python", "expression": "buildings"},
        "geomlops:buildings": {"simplify_m": 0.5, "square": True, "min_area_m2": 4.0},
    }
    finish = resolve_finisher(output)
    assert finish is not None
    metre = 1 / 111_000  # about a metre of latitude, in degrees
    house = affinity.skew(box(85.52, 27.62, 85.52 + 12 * metre, 27.62 + 8 * metre), xs=4)
    speck = box(85.53, 27.63, 85.53 + metre, 27.63 + metre)  # 1 m²: under min_area_m2, dropped
    geoms = np.array([house, speck], dtype=object)

    done, index, areas = finish_each(finish, geoms, "EPSG:4326")

    assert len(done) == 1 and index.tolist() == [0]  # the speck is dropped, the house kept
    ring = np.asarray(done[0].exterior.coords)[:-1]
    scale = np.array([math.cos(math.radians(27.62)), 1.0])
    for i in range(len(ring)):  # right angles on the ground (longitudes scaled to metres)
        u, v = (ring[i - 1] - ring[i]) * scale, (ring[(i + 1) % len(ring)] - ring[i]) * scale
        assert abs(float(np.dot(u, v)) / (np.linalg.norm(u) * np.linalg.norm(v))) < 0.01
    assert areas.tolist() == geometry_areas(done, "EPSG:4326").tolist()
    assert 60 < areas[0] < 120  # about 12 m x 8 m, in m²


def test_a_folder_whose_files_another_item_describes_is_not_planned_into(tmp_path: Path) -> None:
    """Published files are an item's assets: a run of another item into the same folder would
    make that item describe its predictions; a rerun of the same item replaces them."""
    from geomlops.errors import ParameterError
    from steps.predictions import check_output_item

    mask, plan = _scene(tmp_path, 8)
    out = tmp_path / "out"
    catalog = tmp_path / "cat" / "catalog.json"
    out.mkdir()
    check_output_item(out, "cloud-mask-v3-x")  # nothing published there yet
    save_plan(plan, out)  # as planning does
    publish_predictions(mask, out, plan, LINEAGE, area="x", catalog=str(catalog), scheduler="synchronous")
    check_output_item(out, "cloud-mask-v3-x")  # the same item again
    with pytest.raises(ParameterError, match=r"assets of predictions item 'cloud-mask-v3-x', which this run"):
        check_output_item(out, "cloud-mask-v4-x")


def test_a_folder_of_other_files_is_never_taken_over(tmp_path: Path) -> None:
    """A run replaces and removes files in its folder: a user's folder (a package, data) given
    as ``output`` is refused, naming what is in it, and nothing in it changes."""
    from geomlops.errors import ParameterError
    from steps.predictions import check_output_item

    mine = tmp_path / "mine"
    (mine / "blocks").mkdir(parents=True)
    (mine / "blocks" / "notes.txt").write_text("mine")
    (mine / "mask.tif").write_text("mine too")
    before = sorted((p.relative_to(mine), p.read_bytes() if p.is_file() else b"") for p in mine.rglob("*"))
    with pytest.raises(
        ParameterError, match=r"'output' .*mine': the folder holds other files \(blocks, mask\.tif\)"
    ):
        check_output_item(mine, "cloud-mask-v3-x")
    assert (
        sorted((p.relative_to(mine), p.read_bytes() if p.is_file() else b"") for p in mine.rglob("*"))
        == before
    )
    (tmp_path / "file").write_text("x")
    with pytest.raises(ParameterError, match=r"'output' .*file': a file; expected a folder"):
        check_output_item(tmp_path / "file", "cloud-mask-v3-x")
    check_output_item(tmp_path / "new", "cloud-mask-v3-x")  # a new folder
    (tmp_path / "empty").mkdir()
    check_output_item(tmp_path / "empty", "cloud-mask-v3-x")  # an empty one
    volume = tmp_path / "volume"  # a fresh volume's root, a folder kept in git: empty all the same
    (volume / "lost+found").mkdir(parents=True)
    (volume / ".gitkeep").write_text("")
    check_output_item(volume, "cloud-mask-v3-x")
