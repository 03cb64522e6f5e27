"""Batch inference through the worker: the model runs in another process, read as its item says.

The models are MLflow pyfuncs logged from code (a box filter with a 20 px receptive-field radius,
more than the default halo), so this process never imports them; the worker runs them with this
environment's Python, as it runs a package's with the package environment's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from catalog_sync.mlm import ModelClass, ModelInput, ModelOutput, ModelSpec, ValueScaling
from geomlops.errors import GeomlopsError
from steps._package_predictor import WORKER, download_model, package_predictor, socket_predictor
from steps.batch import (
    MAX_THREADS_BESIDE,
    assemble_mask,
    block_path,
    pieces_path,
    plan_batch,
    predict_group,
    save_plan,
    threads_beside,
)
from steps.model_io import ModelIO
from steps.predict import NODATA_CLASS, predict_block
from steps.predictions import Lineage, publish_predictions

RADIUS = 20  # the model's receptive-field radius: more than the default halo of 16
MODULE = "geomlops_test_box_model"
MODEL_CODE = '''
import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

RADIUS, MODE = {radius}, {mode!r}

class BoxModel(PythonModel):
    """Mean of band 0 over a (2r+1)^2 window (zero outside), divided by 255: a probability."""

    def predict(self, context, model_input, params=None):
        batch = np.asarray(model_input, dtype=np.float64)
        if batch.shape[1] != 2:
            raise ValueError(f"expected 2 bands, got {{batch.shape[1]}}")
        r, k = RADIUS, 2 * RADIUS + 1
        c = np.pad(batch[:, 0], ((0, 0), (r + 1, r), (r + 1, r))).cumsum(1).cumsum(2)
        p = (c[:, k:, k:] - c[:, :-k, k:] - c[:, k:, :-k] + c[:, :-k, :-k]) / (k * k * 255.0)
        if MODE == "scores":
            return np.stack([1 - p, p], axis=1).astype(np.float32)
        return p[:, None].astype(np.float32)


mlflow.models.set_model(BoxModel())
'''
CLASSES = (ModelClass(name="background", value=0), ModelClass(name="building", value=1))


SAVE = """
import sys
import mlflow.pyfunc

for code, target in zip(sys.argv[1::2], sys.argv[2::2]):
    mlflow.pyfunc.save_model(target, python_model=code, pip_requirements=["numpy", "mlflow"])
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The models, saved by another process: this one never runs their code."""
    folder = tmp_path_factory.mktemp("box-models")
    args = []
    for name in ("scores", "score", "broken"):
        code = folder / f"{MODULE}_{name}.py"
        code.write_text(MODEL_CODE.format(radius=RADIUS, mode="score" if name == "broken" else name))
        args += [str(code), str(folder / name)]
    saved = subprocess.run([sys.executable, "-c", SAVE, *args], capture_output=True, text=True, timeout=600)
    assert saved.returncode == 0, saved.stderr[-3000:]
    # a model whose code needs a module its environment lacks
    broken = folder / "broken" / f"{MODULE}_broken.py"
    broken.write_text("import geomlops_no_such_module\n" + broken.read_text())
    return {name: folder / name for name in ("scores", "score", "broken")}


def _spec(output: ModelOutput, **input_update: Any) -> ModelSpec:
    model_input = ModelInput(
        name="two bands",
        bands=("a", "b"),
        shape=(-1, 2, -1, -1),
        dim_order=("batch", "bands", "height", "width"),
        data_type="float32",
        halo=RADIUS,
    ).model_copy(update=input_update)
    return ModelSpec(
        id="box",
        name="box",
        architecture="box filter",
        tasks=("semantic-segmentation",),
        inputs=(model_input,),
        outputs=(output,),
    )


SCORES = ModelOutput(  # logged with its classes: two channels of class probabilities
    name="scores",
    tasks=("semantic-segmentation",),
    shape=(-1, 2, -1, -1),
    dim_order=("batch", "classes", "height", "width"),
    data_type="float32",
    classes=CLASSES,
)
SCORE = ModelOutput(  # logged without classes: one raw probability
    name="probability",
    tasks=("semantic-segmentation",),
    shape=(-1, 1, -1, -1),
    dim_order=("batch", "channel", "height", "width"),
    data_type="float32",
)


def _whole(model: Path, image: Path, spec: ModelSpec) -> np.ndarray:
    """The model's answer on the whole image, read with the model's radius around it (beyond
    the image's edge, as for every block, the image mirrored)."""
    with package_predictor(sys.executable, model) as predict, rasterio.open(image) as src:
        window = (0, 0, src.width, src.height)
        return predict_block(predict, src, window, halo=RADIUS, io=ModelIO.from_spec(spec))


def _mask(plan: Any, output: Path) -> np.ndarray:
    with rasterio.open(assemble_mask(plan, output)) as src:
        return src.read(1)


def test_block_edges_equal_the_whole_image_with_the_items_halo(
    home: Path, tmp_path: Path, models: dict[str, Path], image: Path
) -> None:
    loaded_before = set(sys.modules)  # other tests in this process may have loaded models in it
    spec = _spec(SCORES)
    whole = _whole(models["scores"], image, spec)
    assert 0 < (whole == 1).sum() < whole.size - 66  # both classes, and the no-data patch
    assert (whole[70:76, 20:31] == NODATA_CLASS).all()
    plan = plan_batch(str(image), None, block_size=48, group_size=16)
    with_halo, too_small = tmp_path / "halo", tmp_path / "default"
    for output, halo in ((with_halo, None), (too_small, 16)):
        save_plan(plan, output)
        for group in plan.groups:
            reports: list[tuple[int, int]] = []  # blocks done of the group's, as a task reports them
            done = predict_group(
                str(models["scores"]),
                plan,
                list(group),
                output,
                spec=spec,
                halo=halo,
                batch_size=3,
                progress=lambda done, total, reports=reports: reports.append((done, total)),
            )
            assert done == [b.id for b in group]
            assert reports[0] == (0, len(group)) and reports[-1] == (len(group), len(group))
            assert [d for d, _ in reports] == sorted(d for d, _ in reports) and len(reports) > 2
    assert np.array_equal(_mask(plan, with_halo), whole)  # the item's halo: 20 px
    assert not np.array_equal(_mask(plan, too_small), whole)  # 16 px: block edges differ
    # a finished block is not predicted again
    reports = []
    group = list(plan.groups[0])
    again = predict_group(
        str(models["scores"]), plan, group, with_halo, spec=spec, progress=lambda *r: reports.append(r)
    )
    assert again == [] and reports == [(len(group), len(group))]
    # the model's code, and MLflow's loader of models from code, never ran in this process
    loaded = set(sys.modules) - loaded_before
    assert not [m for m in sys.modules if MODULE in m]
    assert not [m for m in loaded if m.startswith("mlflow.pyfunc.loaders")]


def test_a_raw_probability_is_thresholded_as_the_item_says(
    home: Path, tmp_path: Path, models: dict[str, Path], image: Path
) -> None:
    lenient = _whole(models["score"], image, _spec(SCORE))
    strict = _whole(models["score"], image, _spec(SCORE.model_copy(update={"threshold": 0.6})))
    assert set(np.unique(lenient).tolist()) == {0, 1, NODATA_CLASS}
    assert 0 < (strict == 1).sum() < (lenient == 1).sum()
    # the same probabilities as two channels: the arg-max is the 0.5 threshold
    assert np.array_equal(_whole(models["scores"], image, _spec(SCORES)), lenient)


def test_value_scaling_from_the_item_reaches_the_model(models: dict[str, Path], image: Path) -> None:
    plain = _whole(models["score"], image, _spec(SCORE))
    # x / 0.5 doubles every value: the model's mean crosses its 0.5 threshold sooner
    doubled = _whole(
        models["score"], image, _spec(SCORE, value_scaling=(ValueScaling(type="scale", value=0.5),))
    )
    assert (doubled == 1).sum() > (plain == 1).sum()
    assert (doubled[plain == 1] == 1).all()


def test_a_model_that_cannot_load_names_the_missing_module(models: dict[str, Path]) -> None:
    with pytest.raises(
        GeomlopsError, match=r"cannot load the model .*No module named 'geomlops_no_such_module'"
    ):
        with package_predictor(sys.executable, models["broken"]):
            pass


def test_a_failed_prediction_names_the_models_error_and_the_worker_goes_on(models: dict[str, Path]) -> None:
    with package_predictor(sys.executable, models["score"]) as predict:
        assert predict.device == "cpu"
        with pytest.raises(GeomlopsError, match=r"shape \(1, 3, 4, 4\): ValueError: expected 2 bands, got 3"):
            predict(np.zeros((1, 3, 4, 4), np.float32))
        assert predict(np.zeros((2, 2, 4, 4), np.float32)).shape == (2, 1, 4, 4)


def _listening_worker(model: Path, port_file: Path, log: Path) -> subprocess.Popen[bytes]:
    """The worker as a sidecar runs it: serving one connection on a free port of localhost."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(model),
                "--listen",
                "127.0.0.1:0",
                "--port-file",
                str(port_file),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_a_worker_on_a_socket_predicts_what_a_worker_on_pipes_predicts(
    home: Path, tmp_path: Path, models: dict[str, Path], image: Path
) -> None:
    """As on Argo, where the worker runs in the model's image beside the step reading the imagery."""
    spec = _spec(SCORES)
    plan = plan_batch(str(image), None, block_size=64, group_size=6)
    group = list(plan.groups[0])
    piped, socketed = tmp_path / "piped", tmp_path / "socket"
    predict_group(str(models["scores"]), plan, group, piped, spec=spec)
    port_file, log = tmp_path / "port", tmp_path / "worker.log"
    worker = _listening_worker(models["scores"], port_file, log)
    try:
        opened = lambda: socket_predictor(port_file, model="box", timeout=120, log_hint=str(log))  # noqa: E731
        assert predict_group("unused", plan, group, socketed, spec=spec, predictor=opened) == [
            b.id for b in group
        ]
        assert worker.wait(timeout=60) == 0  # it serves one connection, then exits
    finally:
        worker.kill()
    _same_blocks(group, piped, socketed)


def test_several_threads_read_write_and_trace_what_one_does_and_say_so_in_order(
    home: Path, tmp_path: Path, models: dict[str, Path], image: Path
) -> None:
    """Beside a model on a GPU the batches are read, and written and traced, in several threads."""
    spec = _spec(SCORES)
    plan = plan_batch(str(image), None, block_size=32, group_size=30)
    group = list(plan.groups[0])
    outputs = {n: tmp_path / f"threads-{n}" for n in (1, 3)}
    for n, output in outputs.items():
        model = str(models["scores"])
        done = predict_group(model, plan, group, output, spec=spec, batch_size=2, threads=n)
        assert done == [b.id for b in group]  # in the plan's order, whichever thread finished first
    _same_blocks(group, outputs[1], outputs[3])


def _same_blocks(group: list[Any], one: Path, other: Path) -> None:
    """Each block's class values, and its polygon pieces byte for byte, are the same in both."""
    for block in group:
        with rasterio.open(block_path(one, block.id)) as a, rasterio.open(block_path(other, block.id)) as b:
            assert np.array_equal(a.read(), b.read())
        assert pieces_path(one, block.id).read_bytes() == pieces_path(other, block.id).read_bytes()


def test_the_threads_beside_the_model_leave_it_the_cpus_it_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads_beside("cuda", cpus=4) == 3  # one feeds the GPU
    assert threads_beside("cuda", cpus=64) == MAX_THREADS_BESIDE  # no gain past a few, but memory
    assert threads_beside("cuda", cpus=1) == 1
    assert threads_beside("cpu", cpus=16) == 1  # a CPU model takes every core
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert threads_beside("cpu", cpus=6) == 2
    assert threads_beside("cpu", cpus=16) == MAX_THREADS_BESIDE
    assert threads_beside("cpu", cpus=2) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "four")
    assert threads_beside("cpu", cpus=16) == 1


def test_a_socket_worker_that_cannot_load_the_model_says_why(tmp_path: Path, models: dict[str, Path]) -> None:
    port_file, log = tmp_path / "port", tmp_path / "worker.log"
    worker = _listening_worker(models["broken"], port_file, log)
    try:
        with (
            pytest.raises(GeomlopsError, match="cannot load the model") as caught,
            socket_predictor(port_file, model="broken", timeout=120, log_hint=str(log)),
        ):
            pass
        assert str(log) in str(caught.value)
        assert worker.wait(timeout=60) == 1
    finally:
        worker.kill()
    never = tmp_path / "never"
    with (
        pytest.raises(GeomlopsError, match=r"did not start within 0 s \(.*never never appeared\)"),
        socket_predictor(never, model="m", timeout=0.2, log_hint="its log"),
    ):
        pass


def test_publishing_reads_the_pieces_traced_while_predicting(
    home: Path, tmp_path: Path, models: dict[str, Path], image: Path
) -> None:
    """The same files as vectorizing the assembled mask, without tracing it again."""
    spec = _spec(SCORES)
    plan = plan_batch(str(image), None, block_size=40, group_size=50)
    output = tmp_path / "run"
    save_plan(plan, output)
    predict_group(str(models["scores"]), plan, list(plan.groups[0]), output, spec=spec)
    mask = assemble_mask(plan, output)
    lineage = Lineage(model="box", model_version="1", run_id="0123456789abcdef")
    catalog = str(tmp_path / "catalog" / "catalog.json")
    published: dict[str, list[bytes]] = {}
    for name in ("pieces", "traced"):
        if name == "traced":
            for block in plan.groups[0]:
                pieces_path(output, block.id).unlink()
        result = publish_predictions(
            mask, output, plan, lineage, area=name, catalog=catalog, scheduler="synchronous"
        )
        assert result.features > 0
        published[name] = [Path(result.geoparquet).read_bytes(), Path(result.geojson).read_bytes()]
    assert published["pieces"] == published["traced"]


def test_features_written_while_predicting_are_those_publishing_writes(
    home: Path, tmp_path: Path, models: dict[str, Path], image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan one task predicts whole: its feature files are written beside the prediction (in
    another process; on the CPU only when asked), and publishing takes them as they are, the
    same bytes it writes itself; a stamp that no longer fits the blocks or the model version is
    not taken."""
    from postprocessing import vectorize
    from steps.predictions import STREAMED, features_while_predicting, streamed_features

    spec = _spec(SCORES)
    plan = plan_batch(str(image), None, block_size=40, group_size=50)
    lineage = Lineage(model="box", model_version="1", run_id="0123456789abcdef")
    catalog = str(tmp_path / "catalog" / "catalog.json")
    files = ("predictions.parquet", "predictions.geojson", "quicklook.png", "predictions.pmtiles")
    written: dict[str, list[bytes]] = {}
    # on the CPU only when asked: the model keeps the cores busy itself
    for name, on_cpu in (("streamed", True), ("after", False)):
        output = tmp_path / name
        save_plan(plan, output)
        predict_group(
            str(models["scores"]),
            plan,
            list(plan.groups[0]),
            output,
            spec=spec,
            beside=features_while_predicting(output, plan, lineage, on_cpu=on_cpu),
        )
        assert (output / STREAMED).is_file() == on_cpu
        mask = assemble_mask(plan, output)
        with monkeypatch.context() as patch:
            if on_cpu:  # nothing is merged again
                patch.setattr(vectorize, "iter_polygons", None)
            result = publish_predictions(mask, output, plan, lineage, area=name, catalog=catalog)
        assert result.features > 0
        written[name] = [(output / f).read_bytes() for f in files]
    assert written["streamed"] == written["after"]
    streamed = tmp_path / "streamed"
    assert streamed_features(streamed, plan, lineage) is not None
    other = Lineage(model="box", model_version="2", run_id="0123456789abcdef")
    assert streamed_features(streamed, plan, other) is None
    # a stamp from before the files had class_name (no layout in it): written again
    stamp = json.loads((streamed / STREAMED).read_text())
    (streamed / STREAMED).write_text(json.dumps({k: v for k, v in stamp.items() if k != "layout"}))
    assert streamed_features(streamed, plan, lineage) is None
    (streamed / STREAMED).write_text(json.dumps(stamp))
    assert streamed_features(streamed, plan, lineage) is not None
    block = block_path(streamed, plan.groups[0][3].id)
    block.write_bytes(block.read_bytes())  # predicted again after the files were written
    assert streamed_features(streamed, plan, lineage) is None


def test_feature_files_being_written_beside_a_failed_prediction_leave_nothing(
    home: Path, tmp_path: Path, models: dict[str, Path], image: Path
) -> None:
    """The predict step ends the process writing the feature files when predicting fails: it
    stops mid-file and leaves no temporary file and no stamp."""
    import shutil
    import time

    from steps.predictions import STREAMED, features_while_predicting

    spec = _spec(SCORES)
    plan = plan_batch(str(image), None, block_size=40, group_size=50)
    lineage = Lineage(model="box", model_version="1", run_id="0123456789abcdef")
    done = tmp_path / "done"
    save_plan(plan, done)
    predict_group(str(models["scores"]), plan, list(plan.groups[0]), done, spec=spec)
    output = tmp_path / "run"
    save_plan(plan, output)
    process = features_while_predicting(output, plan, lineage, on_cpu=True)("cpu")
    assert process is not None and features_while_predicting(output, plan, lineage)("cpu") is None
    (output / "blocks").mkdir()
    first_row = [b for b in plan.groups[0] if b.row_off == 0]
    for block in first_row:  # the first row finished, as the predict step leaves a block
        shutil.copy(pieces_path(done, block.id), pieces_path(output, block.id))
        shutil.copy(block_path(done, block.id), block_path(output, block.id))
    deadline = time.monotonic() + 60
    while not list(output.glob(".predictions.parquet*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(output.glob(".predictions.parquet*")), "the process never began the GeoParquet"
    process.terminate()  # as predict_group does when predicting fails
    process.join(30)
    assert process.exitcode == 1  # ended by the signal, through SystemExit
    left = {p.name for p in output.iterdir()} - {"plan.json", "blocks"}
    assert left == set() and not (output / STREAMED).exists()


def test_reading_ahead_stopped_early_lets_go_of_the_imagery_at_once(image: Path) -> None:
    """The reading generator's threads and handles go when the reading stops, not when collected."""
    import threading

    from steps.batch import _batches, _ReadAhead

    plan = plan_batch(str(image), None, block_size=32, group_size=30)
    blocks = [b for g in plan.groups for b in g]
    io = ModelIO.from_spec(_spec(SCORES))
    ahead = _ReadAhead(_batches(plan, blocks, io, 2, threads=lambda: 2, most=2), 2)
    next(ahead)
    ahead.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("read-blocks")]


def test_imagery_that_cannot_be_read_names_the_block_and_gdals_reason(image: Path, tmp_path: Path) -> None:
    """A damaged tile: the error says which block and why (GDAL's chained error), not only
    rasterio's 'Read failed. See previous exception'."""
    from steps.batch import _batches

    with rasterio.open(image) as src:
        profile = {**src.profile, "tiled": True, "blockxsize": 64, "blockysize": 64, "compress": "deflate"}
        data = src.read()
    damaged = tmp_path / "damaged.tif"
    with rasterio.open(damaged, "w", **profile) as dst:
        dst.write(data)
    raw = bytearray(damaged.read_bytes())
    start, end = len(raw) * 2 // 5, len(raw) * 3 // 5  # tiles' compressed data, not the header
    raw[start:end] = np.random.default_rng(1).integers(0, 256, end - start, dtype=np.uint8).tobytes()
    damaged.write_bytes(bytes(raw))
    plan = plan_batch(str(damaged), None, block_size=64, group_size=30)
    blocks = [b for g in plan.groups for b in g]
    io = ModelIO.from_spec(_spec(SCORES))
    with pytest.raises(GeomlopsError) as caught:
        for _ in _batches(plan, blocks, io, 2, threads=lambda: 1, most=1):
            pass
    message = str(caught.value)
    assert message.startswith(f"imagery {damaged}: block r")
    assert "cannot be read: " in message and "IReadBlock failed" in message, message


def test_a_models_files_are_downloaded_once_and_whole(tmp_path: Path) -> None:
    """Into a folder beside the target, then moved into place: a folder with an MLmodel is whole,
    and is used as it is (for the worker's cache and the package's entry points alike)."""
    source = tmp_path / "logged"
    (source / "data").mkdir(parents=True)
    (source / "MLmodel").write_text("flavors: {}\n")
    (source / "data" / "weights.bin").write_bytes(b"\x01" * 64)
    target = tmp_path / "shared" / "model"
    assert download_model(source.as_uri(), target) == target
    assert (target / "data" / "weights.bin").read_bytes() == b"\x01" * 64
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]  # no temporary folder left

    (source / "data" / "weights.bin").write_bytes(b"\x02" * 64)  # not fetched again
    assert download_model(source.as_uri(), target) == target
    assert (target / "data" / "weights.bin").read_bytes() == b"\x01" * 64

    other = tmp_path / "shared" / "other"
    with pytest.raises(GeomlopsError, match=r"model models:/gone/1: cannot be downloaded"):
        download_model((tmp_path / "gone").as_uri(), other, "models:/gone/1")
    assert sorted(p.name for p in other.parent.iterdir()) == ["model"]  # nothing half-written
