"""Batch inference over an area: plan blocks, predict groups of them, assemble the mask.

Each block's prediction is written to its own GeoTIFF under ``<output>/blocks/`` through a
temporary file and a rename, so a block's file exists only once the block is finished: a run
that dies anywhere resumes without redoing a finished block.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, closing, suppress
from pathlib import Path
from queue import Empty, Queue
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from catalog_sync.mlm import ModelInput, ModelSpec
from geomlops.errors import GeomlopsError, ImageryMismatchError, ParameterError, PermanentError
from geomlops.files import atomic_path
from steps.model_io import BACKGROUND_CLASS, NODATA_CLASS
from steps.predict import Predict

if TYPE_CHECKING:
    from postprocessing.kernel import BlockPieces
    from steps.model_io import ModelIO

_T = TypeVar("_T")
#: an input of any bands and size: values as read (a plan without the model's spec)
_ANY_INPUT = ModelInput(
    name="any",
    bands=(),
    shape=(-1, -1, -1, -1),
    dim_order=("batch", "bands", "height", "width"),
    data_type="float32",
)


class PlannedBlock(BaseModel):
    """One block to predict: its id and pixel window."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    col_off: int
    row_off: int
    width: int
    height: int


class BatchPlan(BaseModel):
    """The blocks of the imagery that meet the area of interest, in groups for fan-out."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    imagery: str
    crs: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    block_size: int
    aoi: dict[str, Any] | None
    notes: tuple[str, ...] = ()
    groups: tuple[tuple[PlannedBlock, ...], ...]
    #: the workflow run that planned it ("" outside a run): its blocks carry it, and a step of
    #: another run finds the folder taken (see :func:`check_plan_run`)
    run: str = ""


#: raster formats GDAL decodes from the start of the file for any window: a block read costs the
#: whole image up to it (OpenAerialMap chips are such JPEGs, often named .tif)
_WHOLE_FILE_DRIVERS = frozenset({"JPEG", "PNG", "GIF", "WEBP"})


def check_batch_locations(imagery: str, aoi: str = "") -> None:
    """Refuse an imagery or AOI file given by a relative path (each task runs in a folder of
    its own); either may be a URL, the AOI GeoJSON text.

    Raises:
        ParameterError: naming the parameter, the value and what it would be here.
    """
    from geomlops.names import check_absolute_location

    if imagery:
        check_absolute_location(imagery, "parameter 'imagery'")
    if aoi and not aoi.lstrip().startswith("{"):
        if _BBOX.fullmatch(aoi.strip()):  # what a map's "copy bounds" gives
            raise ParameterError(
                f"parameter 'aoi' {aoi!r}: a bounding box; expected GeoJSON in WGS84, as a file, a URL or "
                'the text itself: {"type": "Polygon", "coordinates": [[[W, S], [E, S], [E, N], [W, N], '
                "[W, S]]]}"
            )
        check_absolute_location(aoi, "parameter 'aoi'")


#: four numbers separated by commas or spaces: a bounding box, not an AOI
_BBOX = re.compile(r"\[?\s*" + r"[\s,]+".join([r"-?\d+(?:\.\d*)?"] * 4) + r"\s*\]?")


def plan_batch(
    imagery: str,
    aoi: dict[str, Any] | None,
    *,
    block_size: int,
    group_size: int,
    model_input: ModelInput | None = None,
) -> BatchPlan:
    """Plan the blocks of ``imagery`` that meet ``aoi`` (GeoJSON, WGS84; None: everything).

    Args:
        imagery: the GeoTIFF to predict.
        aoi: area of interest as GeoJSON (WGS84), or None for the whole imagery.
        block_size: block side in pixels.
        group_size: blocks per prediction task.
        model_input: the model's MLM input; the imagery's bands and data type are checked.

    Raises:
        ImageryMismatchError: the imagery does not match the model's input.
        AoiError: the AOI is invalid or outside the imagery.
        ParameterError: the imagery cannot be read, or sizes are not positive.

    A note of the plan says so when the imagery is a format read whole for every block (JPEG,
    PNG): it predicts, but many times slower than a tiled GeoTIFF.
    """
    import rasterio
    import shapely
    from shapely.geometry import shape

    from postprocessing.grid import plan_blocks
    from steps.aoi import grid_aoi
    from steps.predict import check_imagery

    if block_size <= 0 or group_size <= 0:
        raise ParameterError(f"block_size and group_size must be positive, got {block_size}, {group_size}")
    try:
        with rasterio.open(imagery) as src:
            if src.crs is None or src.transform.is_identity:
                missing = "a CRS" if src.crs is None else "a geotransform"
                raise ImageryMismatchError(
                    f"imagery {imagery}: {src.driver} file without {missing}; expected a georeferenced "
                    "raster (a GeoTIFF with its CRS and transform)"
                )
            crs, transform, height, width = src.crs.to_string(), src.transform, src.height, src.width
            driver = src.driver
            if model_input is not None:
                check_imagery(src, model_input)
    except rasterio.errors.RasterioIOError as err:
        if Path(imagery).is_dir():  # a folder of tiles or chips: one raster is read
            raise ParameterError(
                f"imagery {imagery}: a folder; expected one raster. Mosaic its tiles first, e.g. "
                "python -c \"import glob, rasterio.merge as m; m.merge(sorted(glob.glob('FOLDER/*.tif')), "
                "dst_path='mosaic.tif')\" (or a GDAL VRT of them)"
            ) from err
        raise ParameterError(f"imagery {imagery}: cannot be read ({err})") from err
    notes: tuple[str, ...] = ()
    area = None
    if aoi is not None:
        gridded = grid_aoi(aoi, raster_crs=crs, raster_transform=transform, raster_shape=(height, width))
        notes, area = gridded.notes, shape(gridded.geometry)
    blocks = []
    for block in plan_blocks(height, width, block_size).blocks:
        if area is not None:
            left, top = transform @ (block.col_off, block.row_off)
            right, bottom = transform @ (block.col_off + block.width, block.row_off + block.height)
            if not area.intersects(
                shapely.box(min(left, right), min(top, bottom), max(left, right), max(top, bottom))
            ):
                continue
        blocks.append(
            PlannedBlock(
                id=block.id,
                col_off=block.col_off,
                row_off=block.row_off,
                width=block.width,
                height=block.height,
            )
        )
    if driver in _WHOLE_FILE_DRIVERS and len(blocks) > 1:
        notes = (
            *notes,
            f"the imagery is a {driver} file, which is decoded from its start for every block: a "
            f"tiled GeoTIFF reads many times faster (gdal_translate -of COG {Path(imagery).name} "
            "imagery.tif)",
        )
    groups = tuple(tuple(blocks[i : i + group_size]) for i in range(0, len(blocks), group_size))
    return BatchPlan(
        imagery=str(Path(imagery).resolve()),
        crs=crs,
        transform=tuple(transform)[:6],
        width=width,
        height=height,
        block_size=block_size,
        aoi=aoi,
        notes=notes,
        groups=groups,
    )


def block_path(output: Path, block_id: str) -> Path:
    """Where a finished block's prediction lives."""
    return output / "blocks" / f"{block_id}.tif"


#: the GeoTIFF tag of a block naming the run that predicted it (:attr:`BatchPlan.run`)
RUN_TAG = "GEOMLOPS_RUN"


def block_done(path: Path, run: str) -> bool:
    """Whether the block at ``path`` is finished by run ``run`` (any block where "": outside a
    run); a block another run left, or one being replaced, is not."""
    if not path.exists():
        return False
    if not run:
        return True
    import rasterio

    try:
        with rasterio.open(path) as src:
            return bool(src.tags().get(RUN_TAG) == run)
    except rasterio.errors.RasterioIOError:
        return False


#: the batch plan's file in its output folder; a folder without one holds no run's outputs
PLAN_FILE = "plan.json"


def start_plan(plan: BatchPlan, output: Path) -> Path:
    """Keep a new run's plan in ``output``, taking the folder over: blocks an earlier run left
    there (another version, imagery or grid) are removed, never taken for this run's.

    Returns:
        The plan's path.
    """
    import shutil

    shutil.rmtree(output / "blocks", ignore_errors=True)
    return save_plan(plan, output)


def check_plan_run(plan: BatchPlan, run: str, output: Path) -> BatchPlan:
    """The plan in ``output`` if run ``run`` made it (either "": outside a run, not checked).

    Raises:
        PermanentError: another run planned into the same folder since; this one stops
            rather than mix the two runs' blocks and files.
    """
    if plan.run and run and plan.run != run:
        raise PermanentError(
            f"the output folder {output} now holds the plan of another run (workflow uid {plan.run}), "
            "started later with the same model and area or output: this run stops so that the two "
            "do not mix; give each run its own area or output"
        )
    return plan


#: blocks per call of the model when its item suggests no batch size
DEFAULT_BATCH = 4
#: predicted batches waiting to be written, and the fewest batches read ahead of the model
_QUEUE_DEPTH = 2
#: the most threads reading, and writing and tracing, beside a model: little is gained beyond
#: a few (Python's lock, tiles decoded again by each reading thread's handle; measured on two
#: cores: at most about twice as fast with any count), while each thread holds a batch and its
#: own buffers
MAX_THREADS_BESIDE = 4
#: the most bytes of prepared blocks read ahead of the model: while the worker starts and loads
#: the model (seconds), reading goes on up to this (256 MiB), not two batches only
READ_AHEAD_BYTES = 256 * 2**20


def _model_io(spec: ModelSpec | None, halo: int | None) -> ModelIO:
    from steps.model_io import ModelIO

    return (
        ModelIO.from_spec(spec, halo=halo)
        if spec is not None
        else ModelIO.from_parts(_ANY_INPUT, None, halo=halo)
    )


def _device(spec: ModelSpec | None) -> str:
    """The GPU where the item declares one (the worker falls back to the CPU without one)."""
    return "cuda" if spec is not None and (spec.accelerator or "").lower() == "cuda" else "cpu"


def predict_group(
    model_uri: str,
    plan: BatchPlan,
    group: list[PlannedBlock],
    output: Path,
    *,
    halo: int | None = None,
    spec: ModelSpec | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    predictor: Callable[[], AbstractContextManager[Predict]] | None = None,
    beside: Callable[[str], Any] | None = None,
    threads: int | None = None,
    shared: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Predict every unfinished block of ``group`` in the model's own environment; return the
    ids predicted now.

    The model runs in a worker started with the interpreter of the environment it was trained
    in (:mod:`steps._package_predictor`); geomlops never loads it. Blocks are read ahead, in
    other threads, and handed to the model ``batch_size`` at a time, and each predicted batch is
    turned into class values, written and traced into polygon pieces (``blocks/<id>.pieces.npz``,
    what publishing merges) in other threads while the model predicts the next ones.

    Blocks whose file exists were finished by an earlier attempt and are skipped. Pixels outside
    the area of interest are written as no data.

    Args:
        model_uri: the model (``models:/NAME/VERSION``, ``runs:/…`` or its files).
        plan: the batch plan.
        group: the blocks to predict.
        output: the run's output folder.
        halo: pixels read around each block; default: the item's ``geomlops:halo`` (else 16).
        spec: the model's MLM spec: scaling, resizing, output interpretation, halo, device.
            None: values as read, class values back.
        batch_size: blocks per call of the model (default: the item's suggestion, else 4).
        device: ``cpu``, ``cuda`` or ``auto`` (default: ``cuda`` where the item's
            ``mlm:accelerator`` says so and a GPU is present).
        predictor: opens the worker to predict with; default: one started here with the
            interpreter of the environment the model was trained in. On Argo: the connection to
            the worker running in the model's image beside this step
            (:func:`steps._package_predictor.socket_predictor`).
        beside: called with the device the model runs on (``cpu``, ``cuda``) once it is
            loaded, to start work beside the prediction (the feature files written as blocks are
            finished: :func:`steps.predictions.features_while_predicting`); what it returns (a
            process, or None) is waited for, or ended if predicting fails.
        threads: batches read at once, and batches written and traced at once; default
            (:func:`threads_beside`): every usable CPU but one beside a model on a GPU, one
            beside a model on the CPU (it has the CPUs).
        shared: where the item chooses the package's own ``inference`` entry point
            (:mod:`steps.own_entry_points`): the folder this process shares with the worker
            ``predictor`` opens (in commands mode), which runs it; default: a temporary folder
            shared with a worker started here.
        progress: called with the blocks of ``group`` finished and their number, before the
            first is predicted and as each batch is written (a task reports them to Argo so).

    Raises:
        GeomlopsError: the model cannot be loaded (the worker's reason), fails, or answers with
            something its MLM output does not describe.
    """
    from geomlops.settings import get_settings
    from steps._package_predictor import model_worker_inputs, package_predictor
    from steps.own_entry_points import chosen_inference, chosen_postprocess

    todo = [b for b in group if not block_done(block_path(output, b.id), plan.run)]
    before = len(group) - len(todo)  # finished by an earlier attempt

    def report(done: list[str]) -> None:
        if progress is not None:
            progress(before + len(done), len(group))

    report([])
    if not todo:
        return []
    io = _model_io(spec, halo)
    own = chosen_inference(spec)
    if own is not None:
        io = _as_stored(io, plan.imagery)
        if predictor is not None and shared is None:
            raise ParameterError("predict_group: a predictor running the package's inference needs `shared`")
    scope = ExitStack()
    opened: AbstractContextManager[Predict]
    if predictor is None:
        python, model_dir = model_worker_inputs(model_uri, get_settings().home_dir / "models")
        if own is not None:  # the entry point gets the model's local copy: no server needed
            model_uri = str(model_dir)
            shared = Path(scope.enter_context(tempfile.TemporaryDirectory(prefix="geomlops-own-")))
        opened = package_predictor(
            python,
            model_dir,
            device=device or _device(spec),
            mode="pyfunc" if own is None else "commands",
            shared=shared or "",
        )
    else:
        opened = predictor()
    size = batch_size or (spec.batch_size if spec is not None else None) or DEFAULT_BATCH
    streaming = None
    # while the model loads, read as beside the device asked for; then as beside the one it is
    # on (never more: a model asked on the GPU may fall back to the CPU, not the other way)
    most = threads or threads_beside(device or _device(spec))
    width = {"threads": most}
    try:
        writer = _BlockWriter(plan, output, io, trace=chosen_postprocess(spec) is None)
        ahead = _ReadAhead(
            _batches(plan, todo, io, size, threads=lambda: width["threads"], most=most),
            _read_ahead_depth(plan, io, size, most),
        )
        with scope, closing(ahead), opened as predict:
            on = str(getattr(predict, "device", "cpu"))
            _same_mode(getattr(predict, "mode", "pyfunc"), own)
            answer = _answers(predict, io)
            if own is not None and spec is not None and shared is not None:
                answer = _own_answers(predict, own, spec, shared, model_uri, plan, io.halo)
            width["threads"] = min(most, threads or threads_beside(on))
            with ThreadPoolExecutor(width["threads"], thread_name_prefix="write-blocks") as pool:
                if beside is not None:
                    streaming = beside(on)
                pending: list[Future[list[str]]] = []
                done: list[str] = []
                for blocks, stack, invalid in ahead:
                    raw = answer(blocks, stack, invalid)
                    pending.append(pool.submit(writer.write, blocks, raw, invalid))
                    while len(pending) > _QUEUE_DEPTH + width["threads"] - 1:
                        done += pending.pop(0).result()
                        report(done)
                for future in pending:
                    done += future.result()
                    report(done)
    except BaseException:
        scope.close()  # ended before it was entered
        if streaming is not None:
            streaming.terminate()
            streaming.join()
        raise
    if streaming is not None:
        streaming.join()
        if streaming.exitcode != 0:
            print(f"the work beside the prediction failed (exit code {streaming.exitcode})")
    return done


_Answers = Callable[[list[PlannedBlock], NDArray[Any], NDArray[np.bool_]], NDArray[Any]]


def _answers(predict: Predict, io: ModelIO) -> _Answers:
    """The model's answers for a batch of blocks (read and prepared as its item says)."""

    def answer(blocks: list[PlannedBlock], stack: NDArray[Any], invalid: NDArray[np.bool_]) -> NDArray[Any]:
        return predict(io.to_model_size(stack))

    return answer


def _same_mode(mode: str, own: str | None) -> None:
    """Refuse a worker that does not do what the item chooses (the item changed since the run
    was planned: the plan started the worker for the other)."""
    if (mode == "commands") != (own is not None):
        chosen = f"its package's {own!r} entry point" if own else "the logged model"
        raise GeomlopsError(
            f"the model's item chooses to predict with {chosen}, but the model's worker was started "
            f"in {mode} mode: the item changed since this run was planned; start a new run"
        )


def _own_answers(
    worker: Any,
    entry_point: str,
    spec: ModelSpec,
    shared: Path,
    model_uri: str,
    plan: BatchPlan,
    halo: int,
) -> _Answers:
    """The rasters the package's own inference entry point writes for a batch of blocks (read
    as stored, with their halo), run by ``worker`` (in commands mode) on the package's copy in
    ``shared``."""
    from affine import Affine

    from steps.own_entry_points import OwnInference, model_for_commands, stage_package

    own = OwnInference(
        worker,
        entry_point=entry_point,
        package=stage_package(spec.package_uri, shared),
        shared=shared,
        model_uri=model_for_commands(model_uri, shared),
        crs=plan.crs,
    )
    transform = Affine(*plan.transform)

    def answer(blocks: list[PlannedBlock], stack: NDArray[Any], invalid: NDArray[np.bool_]) -> NDArray[Any]:
        grids = [transform @ Affine.translation(b.col_off - halo, b.row_off - halo) for b in blocks]
        return own(stack, invalid, grids, [b.id for b in blocks])

    return answer


def _as_stored(io: ModelIO, imagery: str) -> ModelIO:
    """``io`` for a package's own inference: every band read as stored (it derives bands, scales
    and resizes itself), its output raster read by the item's output (bands first: the class dimension, if
    any, is axis 1)."""
    import dataclasses

    import rasterio

    with rasterio.open(imagery) as src:
        dtype = src.dtypes[0]
    return dataclasses.replace(
        io,
        bands=(),
        sources=(),  # every band, derived ones not computed: the package's code reads what it needs
        derived=(),
        data_type=dtype,
        scaling=(),
        size=None,
        resize_type=None,
        class_axis=None if io.class_axis is None else 1,
    )


def threads_beside(device: str, cpus: int | None = None) -> int:
    """Threads to read, write and trace blocks beside a model on ``device``, at most
    :data:`MAX_THREADS_BESIDE`: every usable CPU but the one feeding the model when it runs on
    a GPU; beside a model on the CPU, the CPUs its OpenMP threads leave (``OMP_NUM_THREADS``),
    else one (a CPU model takes them all, and OpenMP threads slowed by others on their cores
    slow the whole model). ``cpus``: default, those this process may keep busy
    (:func:`geomlops.background.usable_cpus`)."""
    from geomlops.background import usable_cpus

    if cpus is None:
        cpus = usable_cpus()
    if device != "cpu":
        return max(1, min(MAX_THREADS_BESIDE, cpus - 1))
    try:
        model = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return 1
    return max(1, min(MAX_THREADS_BESIDE, cpus - model))


def _read_ahead_depth(plan: BatchPlan, io: ModelIO, size: int, threads: int = 1) -> int:
    """Batches to read ahead: as many as ``READ_AHEAD_BYTES`` holds (a batch: ``size`` blocks
    of the model's bands with their halo, in its data type, and their no-data masks) less those
    the ``threads`` reading hold beyond one, at least ``_QUEUE_DEPTH``."""
    import rasterio

    bands = max(len(io.bands), len(io.sources))
    if not bands:
        with rasterio.open(plan.imagery) as src:
            bands = src.count
    side = min(plan.block_size, max(plan.width, plan.height)) + 2 * io.halo
    batch = size * side * side * (bands * np.dtype(io.data_type).itemsize + 1)
    return int(max(_QUEUE_DEPTH, min(READ_AHEAD_BYTES // max(batch, 1), 256) - (threads - 1)))


def _batches(
    plan: BatchPlan,
    blocks: list[PlannedBlock],
    io: ModelIO,
    size: int,
    threads: Callable[[], int] = lambda: 1,
    most: int = 1,
) -> Iterator[tuple[list[PlannedBlock], NDArray[Any], NDArray[np.bool_]]]:
    """Blocks read with their halo, ``size`` at a time, each at the plan's block size (edge
    blocks padded with no data) so that they stack; in order, ``threads()`` batches read at
    once (asked before each batch: it may shrink once the model's device is known), by at most
    ``most`` threads, each with its own handle on the imagery (a handle more is a whole-file
    image decoded again)."""
    import rasterio

    from steps.predict import read_block

    side = min(plan.block_size, max(plan.width, plan.height))
    local = threading.local()
    opened: list[Any] = []
    lock = threading.Lock()

    def read(part: list[PlannedBlock]) -> tuple[list[PlannedBlock], NDArray[Any], NDArray[np.bool_]]:
        src = getattr(local, "src", None)
        if src is None:
            src = local.src = rasterio.open(plan.imagery)
            with lock:
                opened.append(src)
        read = []
        for block in part:
            try:
                read.append(read_block(src, _window(block), io, halo=io.halo, size=side))
            except rasterio.errors.RasterioIOError as err:  # GDAL's reason is the chained error
                cause = err.__cause__ or err.__context__
                raise GeomlopsError(
                    f"imagery {plan.imagery}: block {block.id} (rows {block.row_off}-"
                    f"{block.row_off + block.height - 1}, columns {block.col_off}-"
                    f"{block.col_off + block.width - 1}) cannot be read: {cause or err}"
                ) from err
        return part, np.stack([r[0] for r in read]), np.stack([r[1] for r in read])

    pending: deque[Future[tuple[list[PlannedBlock], NDArray[Any], NDArray[np.bool_]]]] = deque()
    try:
        with ThreadPoolExecutor(max(1, most), thread_name_prefix="read-blocks") as pool:
            try:
                for start in range(0, len(blocks), size):
                    while len(pending) >= max(1, threads()):
                        yield pending.popleft().result()
                    pending.append(pool.submit(read, blocks[start : start + size]))
                while pending:
                    yield pending.popleft().result()
            finally:  # stopped early: what has not started is not read
                for future in pending:
                    future.cancel()
    finally:  # every read has ended
        for src in opened:
            src.close()


def _window(block: PlannedBlock) -> tuple[int, int, int, int]:
    return (block.col_off, block.row_off, block.width, block.height)


class _ReadAhead(Iterator[_T]):
    """``items`` produced in a thread started at once (so the first ones are ready while the
    model loads), up to ``depth`` ahead of the consumer; the producer's errors are raised in the
    consumer. :meth:`close` stops the producer (call it however the consumer ends)."""

    def __init__(self, items: Iterator[_T], depth: int) -> None:
        self._queue: Queue[tuple[bool, Any]] = Queue(maxsize=depth)
        self._stop = threading.Event()
        self._items = items
        self._thread = threading.Thread(target=self._produce, name="read-blocks", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            for item in self._items:
                if self._stop.is_set():
                    return
                self._queue.put((True, item))
            self._queue.put((False, None))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            self._queue.put((False, err))
        finally:  # a generator stopped early lets go of what it holds now, not when collected
            close = getattr(self._items, "close", None)
            if close is not None:
                close()

    def __next__(self) -> _T:
        if self._stop.is_set():
            raise StopIteration
        more, item = self._queue.get()
        if not more:
            self._stop.set()
            if item is not None:
                raise item
            raise StopIteration
        result: _T = item
        return result

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():  # let a producer blocked on a full queue finish
            with suppress(Empty):
                self._queue.get(timeout=0.1)


class _BlockWriter:
    """Turns a batch of the model's answers into finished blocks: class values, no data and
    the area of interest applied, the block's GeoTIFF and its polygon pieces written."""

    def __init__(self, plan: BatchPlan, output: Path, io: ModelIO, *, trace: bool = True) -> None:
        from affine import Affine
        from rasterio.warp import transform_geom

        self.plan, self.output, self.io, self.trace = plan, output, io, trace
        self.transform = Affine(*plan.transform)
        self.area = transform_geom("EPSG:4326", plan.crs, _union(plan.aoi)) if plan.aoi else None
        self.rows = -(-plan.height // plan.block_size)
        self.cols = -(-plan.width // plan.block_size)
        (output / "blocks").mkdir(parents=True, exist_ok=True)

    def write(self, blocks: list[PlannedBlock], raw: NDArray[Any], invalid: NDArray[np.bool_]) -> list[str]:
        from affine import Affine
        from rasterio.features import geometry_mask

        from steps.predict import block_centre

        height, width = invalid.shape[-2:]
        if len(raw) != len(blocks):
            raise GeomlopsError(f"the model answered {len(raw)} arrays for a batch of {len(blocks)} blocks")
        classes = self.io.interpret(raw, height, width)
        ids = []
        for block, predicted, nodata in zip(blocks, classes, invalid, strict=True):
            mask = block_centre(predicted, nodata, _window(block), self.io.halo)
            block_transform = self.transform @ Affine.translation(block.col_off, block.row_off)
            if self.area is not None:
                outside = geometry_mask([self.area], (block.height, block.width), block_transform)
                mask[outside] = NODATA_CLASS
            if self.trace:  # not where the package post-processes the mask itself
                save_pieces(pieces_path(self.output, block.id), self._trace(block, mask), self.plan.run)
            path = block_path(self.output, block.id)
            _write_block(path, mask, self.plan.crs, block_transform, self.plan.run)
            ids.append(block.id)
        return ids

    def _trace(self, block: PlannedBlock, mask: NDArray[np.uint8]) -> BlockPieces:
        """The block's pieces as publishing traces them from the assembled mask."""
        from postprocessing.kernel import mask_to_polygons

        row, col = block.row_off // self.plan.block_size, block.col_off // self.plan.block_size
        shared = (row > 0, row < self.rows - 1, col > 0, col < self.cols - 1)
        data = mask.copy()
        data[data == BACKGROUND_CLASS] = NODATA_CLASS
        return mask_to_polygons(data, (block.row_off, block.col_off), nodata=NODATA_CLASS, shared=shared)


def pieces_path(output: Path, block_id: str) -> Path:
    """Where a finished block's polygon pieces live (written before the block's GeoTIFF)."""
    return output / "blocks" / f"{block_id}.pieces.npz"


_PIECE_FIELDS = ("xy", "ring_offsets", "poly_offsets", "classes", "saddle")


#: the array naming the workflow run that traced a block's pieces, beside the pieces
_PIECES_RUN = "run"


def save_pieces(path: Path, pieces: BlockPieces, run: str = "") -> None:
    """Keep a block's traced pieces (uncompressed: they are read back once, soon), with the
    workflow run that traced them, as its block carries it (:data:`RUN_TAG`)."""
    arrays = {
        f"{part}_{name}": getattr(getattr(pieces, part), name)
        for part in ("final", "edge")
        for name in _PIECE_FIELDS
    }
    arrays[_PIECES_RUN] = np.array(run)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def pieces_run(path: Path) -> str | None:
    """The workflow run that traced the pieces at ``path`` ("" outside a run); None where there
    are none, or none readable."""
    import zipfile

    try:
        with np.load(path) as data:
            return str(data[_PIECES_RUN]) if _PIECES_RUN in data.files else ""
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def load_pieces(path: Path | None, run: str = "") -> BlockPieces:
    """A block's pieces as :func:`save_pieces` kept them; None: a block with none.

    Raises:
        PermanentError: ``run`` is given and another run traced them (two runs in one folder).
    """
    from postprocessing._rings import Polygons, empty
    from postprocessing.kernel import BlockPieces

    if path is None:
        return BlockPieces(final=empty(), edge=empty())
    with np.load(path) as data:
        traced_by = str(data[_PIECES_RUN]) if _PIECES_RUN in data.files else ""
        if run and traced_by != run:
            raise PermanentError(
                f"{path} was traced by another run (workflow uid {traced_by or 'none'}, this run "
                f"{run}): two runs wrote into {path.parent.parent}; run this one again"
            )
        final, edge = (
            Polygons(**{name: data[f"{part}_{name}"] for name in _PIECE_FIELDS}) for part in ("final", "edge")
        )
    return BlockPieces(final=final, edge=edge)


def _union(aoi: dict[str, Any] | None) -> dict[str, Any]:
    from shapely.geometry import mapping

    from steps.aoi import aoi_geometry

    return dict(mapping(aoi_geometry(aoi or {})))


def _write_block(path: Path, mask: Any, crs: str, transform: Any, run: str = "") -> None:
    import rasterio

    with atomic_path(path) as tmp:
        profile = {
            "driver": "GTiff",
            "height": mask.shape[0],
            "width": mask.shape[1],
            "count": 1,
            "dtype": "uint8",
            "crs": crs,
            "transform": transform,
            "nodata": NODATA_CLASS,
            "compress": "deflate",
        }
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(mask, 1)
            if run:
                dst.update_tags(**{RUN_TAG: run})


def assemble_mask(plan: BatchPlan, output: Path) -> Path:
    """Write every block's prediction into one class raster (``mask.tif``), block by block.

    Raises:
        GeomlopsError: a planned block has no prediction (its id named).
        PermanentError: a block was predicted by another run (two runs in one folder).
    """
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    missing = [b.id for g in plan.groups for b in g if not block_path(output, b.id).exists()]
    if missing:
        raise GeomlopsError(
            f"blocks not predicted yet: {', '.join(missing[:10])}{' …' if len(missing) > 10 else ''}"
        )
    target = output / "mask.tif"
    profile = {
        "driver": "GTiff",
        "height": plan.height,
        "width": plan.width,
        "count": 1,
        "dtype": "uint8",
        "crs": plan.crs,
        "transform": Affine(*plan.transform),
        "nodata": NODATA_CLASS,
        "compress": "deflate",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    with atomic_path(target) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            for row_start in range(0, plan.height, 256):
                h = min(256, plan.height - row_start)
                dst.write(
                    np.full((h, plan.width), NODATA_CLASS, dtype="uint8"),
                    1,
                    window=Window(0, row_start, plan.width, h),
                )
            for group in plan.groups:
                for block in group:
                    with rasterio.open(block_path(output, block.id)) as src:
                        if plan.run and src.tags().get(RUN_TAG) != plan.run:
                            raise PermanentError(
                                f"block {block.id} in {output} was predicted by another run "
                                f"({src.tags().get(RUN_TAG) or 'unknown'}), not this one ({plan.run}): "
                                "two runs wrote to one folder; give each run its own area or output"
                            )
                        window = Window(block.col_off, block.row_off, block.width, block.height)
                        dst.write(src.read(1), 1, window=window)
    return target


def save_plan(plan: BatchPlan, output: Path) -> Path:
    """Keep the plan with the outputs (what was predicted, on which grid)."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / PLAN_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(plan.model_dump(mode="json"), indent=1))
    return path
