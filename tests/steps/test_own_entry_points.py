"""A package's own ``inference`` and ``postprocess`` entry points, chosen by its MLM item.

The package here is a folder with an MLproject whose commands run a small script; the worker
runs them in commands mode with this environment's Python (the script needs only numpy and
rasterio), as it runs a real package's with the package environment's (the workflow test with
a scaffolded package in its own environment is ``tests/pipelines/test_own_package.py``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio

from catalog_sync.mlm import ModelClass, ModelInput, ModelOutput, ModelSpec, parse_model_item
from geomlops.errors import GeomlopsError, InvalidModelItemError, PackageOutputError, PermanentError
from postprocessing.registry import resolve_postprocessor
from steps._package_predictor import package_predictor
from steps.batch import assemble_mask, plan_batch, predict_group, save_plan
from steps.own_entry_points import (
    chosen_inference,
    chosen_postprocess,
    entry_point_faults,
    own_postprocess,
    package_features,
    stage_package,
)
from steps.package_check import check_package
from steps.package_scaffold import scaffold_package
from steps.predictions import Lineage, publish_predictions

RADIUS = 6  # the package's model: a box mean of band 1 over (2r+1)^2 pixels, / 255
SCRIPT = """
import json, os, sys
import numpy as np
import rasterio
from rasterio.features import shapes
from rasterio.warp import transform_geom

RADIUS = {radius}

def infer(image, output):
    if os.path.exists("fail"):
        print("no GPU memory left for this block", file=sys.stderr)
        sys.exit(3)
    with rasterio.open(image) as src:
        band = src.read(1).astype("float64")
        masked = src.read_masks(1) == 0
        profile = {{**src.profile, "count": 1, "dtype": "float32"}}
        with open("blocks.txt", "a") as seen:  # where each block lies, and what it masks
            seen.write(f"{{src.crs}} {{src.transform.c}} {{src.transform.f}} {{int(masked.sum())}}\\n")
    r, k = RADIUS, 2 * RADIUS + 1
    c = np.pad(band, ((r + 1, r), (r + 1, r))).cumsum(0).cumsum(1)
    score = (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k * 255.0)
    if os.path.exists("shrink"):  # a model that loses a row
        score, profile["height"] = score[:-1], profile["height"] - 1
    if os.path.exists("nodata"):  # its own no-data where the input has none
        score[masked] = float("nan")
    with rasterio.open(output, "w", **profile) as dst:
        dst.write(score.astype("float32"), 1)

def postprocess(mask, output):
    with rasterio.open(mask) as src:
        data = src.read(1)
        features = [
            {{"type": "Feature", "properties": {{"class": int(value)}},
             "geometry": transform_geom(src.crs, "EPSG:4326", geometry)}}
            for geometry, value in shapes(data, mask=data == 1, transform=src.transform, connectivity=4)
        ]
    with open(output, "w") as out:
        json.dump({{"type": "FeatureCollection", "features": features}}, out)

{{"infer": infer, "postprocess": postprocess}}[sys.argv[1]](*sys.argv[2:])
"""
MLPROJECT = """
name: own
entry_points:
  inference:
    parameters: {model_uri: {type: string}, image: {type: path}, output: {type: string}}
    command: python own.py infer {image} {output}
  postprocess:
    parameters: {mask: {type: path}, output: {type: string}}
    command: python own.py postprocess {mask} {output}
"""
CLASSES = (ModelClass(name="background", value=0), ModelClass(name="building", value=1))


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("own-package")
    (folder / "MLproject").write_text(MLPROJECT)
    (folder / "own.py").write_text(SCRIPT.format(radius=RADIUS))
    return folder


def _spec(package: Path, **output_update: Any) -> ModelSpec:
    model_input = ModelInput(
        name="two bands",
        bands=("a", "b"),
        shape=(-1, 2, -1, -1),
        dim_order=("batch", "bands", "height", "width"),
        data_type="float32",
        halo=RADIUS,
        entry_point="inference",
    )
    output = ModelOutput(  # one score, read by the item's threshold
        name="probability",
        tasks=("semantic-segmentation",),
        shape=(-1, 1, -1, -1),
        dim_order=("batch", "channel", "height", "width"),
        data_type="float32",
        classes=CLASSES,
        threshold=0.5,
        entry_point="postprocess",
    ).model_copy(update=output_update)
    return ModelSpec(
        id="own",
        name="own",
        architecture="box filter",
        tasks=("semantic-segmentation",),
        inputs=(model_input,),
        outputs=(output,),
        package_uri=str(package),
    )


def _whole_image(image: Path) -> np.ndarray:
    """The classes of the box mean over the whole image (zero in no data; beyond its edge the
    image mirrored, as blocks are read there)."""
    with rasterio.open(image) as src:
        band = src.read(1, masked=True).filled(0).astype("float64")
        invalid = src.read_masks(1) == 0
    r, k = RADIUS, 2 * RADIUS + 1
    c = np.pad(np.pad(band, r, mode="reflect"), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    score = (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k * 255.0)
    classes = (score.astype("float32") > 0.5).astype("uint8")
    classes[invalid] = 255
    return classes


def _predict(
    package: Path, image: Path, output: Path, shared: Path, spec: ModelSpec
) -> tuple[Any, list[str]]:
    plan = plan_batch(str(image), None, block_size=64, group_size=2)
    save_plan(plan, output)
    done: list[str] = []
    model = output.parent / "model"  # the model's files on this machine (the script needs none)
    model.mkdir(exist_ok=True)
    for group in plan.groups:
        done += predict_group(
            str(model),
            plan,
            list(group),
            output,
            spec=spec,
            predictor=lambda: package_predictor(sys.executable, package, mode="commands", shared=shared),
            shared=shared,
        )
    return plan, done


def test_blocks_predicted_by_the_packages_own_inference_equal_the_whole_image(
    package: Path, image: Path, tmp_path: Path
) -> None:
    """Each block, with the item's halo, goes through the entry point as a GeoTIFF of the
    imagery's bands as stored; the score it writes is thresholded as the item says."""
    shared = tmp_path / "shared"
    shared.mkdir()
    plan, done = _predict(package, image, tmp_path / "run", shared, _spec(package))
    assert len(done) == 9  # 3 x 3 blocks of 64 px
    with rasterio.open(assemble_mask(plan, tmp_path / "run")) as src:
        mask = src.read(1)
    expected = _whole_image(image)
    invalid = expected == 255
    assert 0 < (expected == 1).sum() < expected.size - 100  # both classes, so the test can fail
    assert np.array_equal(mask, expected)
    assert sorted(p.name for p in (shared / "runs").iterdir()) == []  # each block's files went
    # each block's GeoTIFF lies where the block lies, with its halo, and masks what has no data
    halo, seen = RADIUS, (shared / "package" / "blocks.txt").read_text().splitlines()
    side, shift = plan.block_size + 2 * halo, halo + plan.block_size
    padded = np.pad(invalid, shift, mode="reflect")  # beyond the edge: the image mirrored
    expected_blocks = []
    for block in (b for g in plan.groups for b in g):
        top, left = block.row_off - halo + shift, block.col_off - halo + shift
        masked = int(padded[top : top + side, left : left + side].sum())
        x, y = 452475 + (block.col_off - halo) * 30, 3408645 - (block.row_off - halo) * 30
        expected_blocks.append(f"EPSG:32616 {float(x)} {float(y)} {masked}")
    assert seen == expected_blocks


def _variant(package: Path, folder: Path, marker: str) -> Path:
    """A copy of the package whose script behaves as ``marker`` says."""
    folder.mkdir()
    for name in ("MLproject", "own.py"):
        (folder / name).write_text((package / name).read_text())
    (folder / marker).write_text("")
    return folder


def test_a_package_whose_item_derives_a_band_gets_the_imagerys_bands_as_stored(
    package: Path, image: Path, tmp_path: Path
) -> None:
    """The package's own inference derives what it needs itself: it gets the imagery's bands
    as stored, not the item's input with its derived band computed."""
    from catalog_sync.mlm import DerivedBand

    spec = _spec(package)
    ratio = DerivedBand(name="ratio", expression="a / b", reads=("a", "b"))
    derived = spec.inputs[0].model_copy(update={"bands": ("a", "ratio"), "derived": (ratio,)})
    shared = tmp_path / "shared"
    shared.mkdir()
    plan, done = _predict(
        package, image, tmp_path / "run", shared, spec.model_copy(update={"inputs": (derived,)})
    )
    assert len(done) == 9
    with rasterio.open(assemble_mask(plan, tmp_path / "run")) as src:
        assert np.array_equal(src.read(1), _whole_image(image))


def test_what_the_package_writes_where_the_block_has_no_data_is_never_read(
    package: Path, image: Path, tmp_path: Path
) -> None:
    """Its own no-data value (NaN here) where the input is masked, beyond the edge included."""
    shared = tmp_path / "shared"
    shared.mkdir()
    own = _variant(package, tmp_path / "nodata", "nodata")
    plan, _ = _predict(own, image, tmp_path / "run", shared, _spec(own))
    with rasterio.open(assemble_mask(plan, tmp_path / "run")) as src:
        assert np.array_equal(src.read(1), _whole_image(image))


@pytest.mark.parametrize(
    ("marker", "expected"),
    [
        ("fail", ["exited with code 3", "no GPU memory left for this block"]),
        (
            "shrink",
            ["it wrote 75 x 76 px (height x width) for an image of 76 x 76 px; the output must be on the"],
        ),
    ],
)
def test_a_failing_entry_point_is_named_with_its_error_and_leaves_no_block(
    package: Path, image: Path, tmp_path: Path, marker: str, expected: list[str]
) -> None:
    broken = _variant(package, tmp_path / "broken", marker)
    shared = tmp_path / "shared"
    shared.mkdir()
    with pytest.raises(GeomlopsError) as raised:
        _predict(broken, image, tmp_path / "run", shared, _spec(broken))
    message = str(raised.value)
    # what the package wrote is wrong every time (not retried); a failed command may not be so
    assert isinstance(raised.value, PermanentError) == (marker == "shrink")
    assert "the package's 'inference' entry point on block r0c0" in message
    assert all(e in message for e in expected), message
    assert not list((tmp_path / "run" / "blocks").glob("*.tif"))


def test_a_worker_not_started_for_what_the_item_chooses_is_refused(
    package: Path, image: Path, tmp_path: Path
) -> None:
    """The item changed between planning (which started the worker) and predicting."""
    spec = _spec(package).model_copy(
        update={"inputs": (_spec(package).inputs[0].model_copy(update={"entry_point": None}),)}
    )
    with pytest.raises(GeomlopsError, match="the item changed since this run was planned"):
        _predict(package, image, tmp_path / "run", tmp_path, spec)


def test_the_commands_worker_answers_a_malformed_request_and_goes_on(package: Path, tmp_path: Path) -> None:
    with package_predictor(sys.executable, package, mode="commands", shared=tmp_path) as worker:
        header = b"[1, 2]"
        worker._writer.write(len(header).to_bytes(4, "big") + header)
        worker._writer.flush()
        with pytest.raises(GeomlopsError, match="malformed request: expected a JSON object, got list"):
            worker._frame("the request")
        with pytest.raises(GeomlopsError, match=r"`kill -9 \$\$` was killed by signal 9"):
            worker.run("kill -9 $$", ".", "the command")
        worker.run("printf 'progress 10%%\\rprogress 100%%\\n' >&2; touch done", ".", "the command")
    assert (tmp_path / "done").is_file()


def test_the_packages_own_postprocess_gives_the_published_features(
    home: Path, package: Path, image: Path, tmp_path: Path
) -> None:
    """Its GeoJSON (longitude/latitude) becomes the files, in the imagery's
    CRS, with the lineage, areas in m² and the block of each feature."""
    shared = tmp_path / "shared"
    shared.mkdir()
    output = tmp_path / "run"
    spec = _spec(package)
    plan, _ = _predict(package, image, output, shared, spec)
    mask = assemble_mask(plan, output)
    with package_predictor(sys.executable, package, mode="commands", shared=shared) as worker:
        copy = stage_package(spec.package_uri, shared)
        written = own_postprocess(worker, entry_point="postprocess", package=copy, shared=shared, mask=mask)
    collection = json.loads(written.read_text())
    assert collection["features"] and collection["features"][0]["properties"] == {"class": 1}
    lineage = Lineage(model="own", model_version="1", run_id="0123456789abcdef")
    catalog = str(tmp_path / "catalog" / "catalog.json")
    result = publish_predictions(mask, output, plan, lineage, area="own", catalog=catalog, features=written)
    table = pq.read_table(result.geoparquet).to_pandas()
    assert len(table) == len(collection["features"]) == result.features
    assert set(table["class"]) == {1}
    assert set(table["model_version"]) == {"1"} and set(table["mlflow_run_id"]) == {lineage.run_id}
    import shapely

    geoms = shapely.from_wkb(table["geometry"])
    # in the imagery's CRS (metres), each feature's area is its polygon's (pixels of 900 m²)
    assert np.allclose(table["area"], shapely.area(geoms), rtol=1e-6)
    with rasterio.open(mask) as src:
        assert np.isclose(table["area"].sum(), (src.read(1) == 1).sum() * 900, rtol=1e-6)
    assert set(table["block_id"]) <= {b.id for g in plan.groups for b in g}


def _collection(features: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": features, **extra}


def _square(x: float, y: float, d: float = 1e-4) -> dict[str, Any]:
    ring = [[x, y], [x + d, y], [x + d, y + d], [x, y + d], [x, y]]
    return {"type": "Polygon", "coordinates": [ring]}


@pytest.mark.parametrize(
    ("collection", "expected"),
    [
        (
            _collection([{"type": "Feature", "properties": {}, "geometry": _square(330000, 3060000)}]),
            "features[0].geometry: coordinates (330000.0, 3060000.0, 330000.0001, 3060000.0001) are not "
            "longitude/latitude",
        ),
        (
            _collection(
                [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {"type": "Point", "coordinates": [85, 27]},
                    }
                ]
            ),
            "features[0].geometry: a Point; expected a (Multi)Polygon",
        ),
        (
            _collection(
                [
                    {"type": "Feature", "properties": {"class": 1}, "geometry": _square(85.5, 27.6)},
                    {"type": "Feature", "properties": {"class": "road"}, "geometry": _square(85.5, 27.6)},
                ]
            ),
            "features[1].properties.class: 'road' is not one of the item's classes "
            "(0 (background), 1 (building))",
        ),
        ({"type": "Feature"}, "expected a GeoJSON FeatureCollection"),
        (
            _collection(
                [{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": []}}]
            ),
            "features[0].geometry: empty; leave the feature out instead",
        ),
        (
            _collection(
                [{"type": "Feature", "properties": {"class": True}, "geometry": _square(85.5, 27.6)}]
            ),
            "features[0].properties.class: True is not one of the item's classes",
        ),
        (
            _collection([], crs={"type": "name", "properties": None}),
            "crs.properties.name: expected a CRS name such as 'EPSG:32645', got None",
        ),
    ],
)
def test_a_packages_geojson_that_is_not_as_expected_is_named(
    tmp_path: Path, package: Path, collection: dict[str, Any], expected: str
) -> None:
    path = tmp_path / "features.geojson"
    path.write_text(json.dumps(collection))
    with pytest.raises(PackageOutputError) as raised:  # permanent: not retried
        list(package_features(path, "EPSG:32645", _spec(package).outputs[0]))
    assert expected in str(raised.value) and str(path) in str(raised.value)


def test_a_packages_polygons_are_oriented_and_its_background_left_out(tmp_path: Path, package: Path) -> None:
    """Geodesic areas depend on ring orientation: a clockwise ring is turned, not negative."""
    from postprocessing.finalize import geometry_areas

    square = _square(85.5, 27.6)
    clockwise = {"type": "Polygon", "coordinates": [square["coordinates"][0][::-1]]}
    features = [
        {"type": "Feature", "properties": {"class": "1.0"}, "geometry": clockwise},
        {"type": "Feature", "properties": {"class": 0}, "geometry": square},
        {"type": "Feature", "properties": {"class": 1.0}, "geometry": square},
    ]
    path = tmp_path / "features.geojson"
    path.write_text(json.dumps(_collection(features)))
    [(geoms, classes)] = list(package_features(path, "EPSG:4326", _spec(package).outputs[0]))
    assert classes.tolist() == [1, 1]  # the background feature left out
    areas = geometry_areas(geoms, "EPSG:4326")
    assert areas[0] == pytest.approx(areas[1]) and 100 < areas[0] < 130  # 1e-4 degrees near 27.6° N


def test_a_packages_geojson_may_name_its_crs_and_give_classes_by_value_or_name(
    tmp_path: Path, package: Path
) -> None:
    path = tmp_path / "features.geojson"
    crs = {"type": "name", "properties": {"name": "EPSG:32645"}}
    square = [
        {"type": "Feature", "properties": {"class": c}, "geometry": _square(330000, 3060000, 2)}
        for c in (1, "building", None)
    ]
    path.write_text(json.dumps(_collection(square, crs=crs)))
    [(geoms, classes)] = list(package_features(path, "EPSG:32645", _spec(package).outputs[0]))
    assert classes.tolist() == [1, 1, 1]
    assert [g.area for g in geoms] == [4.0, 4.0, 4.0]  # taken as given: the CRS it names


def test_the_item_chooses_the_entry_points_and_the_check_names_what_is_missing(package: Path) -> None:
    item = {
        "id": "own",
        "properties": {
            "mlm:name": "own",
            "mlm:architecture": "box",
            "mlm:tasks": ["semantic-segmentation"],
            "mlm:input": [
                {
                    "name": "in",
                    "bands": ["a", "b"],
                    "input": {
                        "shape": [-1, 2, -1, -1],
                        "dim_order": ["batch", "bands", "height", "width"],
                        "data_type": "float32",
                    },
                    "geomlops:inference": "predict",
                }
            ],
            "mlm:output": [
                {
                    "name": "out",
                    "tasks": ["semantic-segmentation"],
                    "result": {
                        "shape": [-1, -1, -1],
                        "dim_order": ["batch", "height", "width"],
                        "data_type": "uint8",
                    },
                    "post_processing_function": {"format": "mlproject", "expression": "postprocess"},
                }
            ],
        },
        "assets": {"model": {"href": "./model", "roles": ["mlm:model"]}},
    }
    spec = parse_model_item(item)
    assert (chosen_inference(spec), chosen_postprocess(spec)) == ("predict", "postprocess")
    # where the package's own does not run (on-demand serving), the task's default stands in
    assert resolve_postprocessor(item["properties"]["mlm:output"][0]).__name__ == "polygons"
    entry_points = {"inference": {"parameters": {"image": {}}}, "postprocess": {"parameters": {"mask": {}}}}
    assert entry_point_faults(spec, entry_points) == [
        (
            "$.properties['mlm:input'][0]['geomlops:inference']",
            "an entry point of the MLproject; 'predict' is not one (it has inference, postprocess)",
        )
    ]
    item["properties"]["mlm:input"][0]["geomlops:inference"] = {"entry_point": "inference"}
    with pytest.raises(
        InvalidModelItemError, match=r"\['geomlops:inference'\]: expected the name of an MLproject"
    ):
        parse_model_item(item)


def test_the_check_holds_the_chosen_entry_points_to_what_geomlops_passes(
    tmp_path: Path, schema_dir: Path
) -> None:
    """As for train: the parameters geomlops passes must be declared, every other one needs a
    default (``device`` is passed only where declared); the item's fault names the item."""
    import yaml

    root = scaffold_package("flood-extent", tmp_path, image="ghcr.io/acme/flood-extent:0.1.0")
    item = json.loads((root / "stac-item.json").read_text())
    item["properties"]["mlm:input"][0]["geomlops:inference"] = "inference"
    item["properties"]["mlm:output"][0]["post_processing_function"] = {
        "format": "mlproject",
        "expression": "postprocess",
    }
    (root / "stac-item.json").write_text(json.dumps(item))
    assert check_package(root, schema_dir).faults == []  # the scaffold's entry points fit

    project = yaml.safe_load((root / "MLproject").read_text())
    inference = project["entry_points"]["inference"]["parameters"]
    inference["chip_size"] = {"type": "float"}  # its own, with no default
    inference["device"] = {"type": "string"}  # passed where declared: needs none
    del project["entry_points"]["postprocess"]["parameters"]["output"]
    (root / "MLproject").write_text(yaml.safe_dump(project))
    faults = check_package(root, schema_dir).faults
    assert [(f.file, f.field, f.expected) for f in faults] == [
        (
            "MLproject",
            "entry_points.inference.parameters.chip_size",
            "a default (geomlops passes only model_uri, image, output (and device where declared) "
            "to inference)",
        ),
        (
            "MLproject",
            "entry_points.postprocess.parameters",
            "a parameter 'output' (geomlops passes mask, output)",
        ),
    ]

    item["properties"]["mlm:input"][0]["geomlops:inference"] = "predict"
    (root / "stac-item.json").write_text(json.dumps(item))
    assert [(f.file, f.field) for f in check_package(root, schema_dir).faults][-1] == (
        "stac-item.json",
        "$.properties['mlm:input'][0]['geomlops:inference']",
    )
    # one entry point cannot be called both ways
    item["properties"]["mlm:input"][0]["geomlops:inference"] = "postprocess"
    (root / "stac-item.json").write_text(json.dumps(item))
    assert [
        (f.field, f.expected) for f in check_package(root, schema_dir).faults if f.file != "MLproject"
    ] == [
        (
            "$.properties['mlm:output'][0].post_processing_function.expression",
            "an entry point other than the one that predicts ('postprocess'): geomlops passes each its "
            "own parameters (model_uri, image, output; mask, output)",
        )
    ]


def test_the_check_names_every_choice_that_is_not_an_entry_points_name(
    tmp_path: Path, schema_dir: Path
) -> None:
    """All at once, each at its JSON path (not only the first, as the item's parser would)."""
    root = scaffold_package("flood-extent", tmp_path, image="ghcr.io/acme/flood-extent:0.1.0")
    item = json.loads((root / "stac-item.json").read_text())
    item["properties"]["mlm:input"][0]["geomlops:inference"] = True
    item["properties"]["mlm:output"][0]["post_processing_function"] = {
        "format": "mlproject",
        "expression": " ",
    }
    (root / "stac-item.json").write_text(json.dumps(item))
    faults = [(f.field, f.expected) for f in check_package(root, schema_dir).faults]
    assert faults == [
        (
            "$.properties['mlm:input'][0]['geomlops:inference']",
            "the name of an MLproject entry point, got True",
        ),
        (
            "$.properties['mlm:output'][0].post_processing_function.expression",
            "the name of an MLproject entry point, got ' '",
        ),
    ]


def test_the_check_names_a_post_processing_format_nothing_runs(tmp_path: Path, schema_dir: Path) -> None:
    """Caught before registration, not after every block is predicted."""
    root = scaffold_package("flood-extent", tmp_path, image="ghcr.io/acme/flood-extent:0.1.0")
    item = json.loads((root / "stac-item.json").read_text())
    function = {"format": "mlflow", "expression": "postprocess"}
    item["properties"]["mlm:output"][0]["post_processing_function"] = function
    (root / "stac-item.json").write_text(json.dumps(item))
    faults = check_package(root, schema_dir).faults
    assert [(f.file, f.field, f.expected) for f in faults] == [
        (
            "stac-item.json",
            "$.properties['mlm:output'][0].post_processing_function.format",
            "'python' (a registered post-processor) or 'mlproject' (an entry point of the package), "
            "got 'mlflow'",
        )
    ]
