"""``geomlops vectorize``: a class raster to GeoParquet or GeoJSON polygons, block by block."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from geomlops.cli._tools import fail_cleanly
from geomlops.errors import ParameterError
from postprocessing.grid import DEFAULT_BLOCK_SIZE


def _nodata(value: str | None) -> int | str | None:
    if value is None:
        return "raster"
    if value.lower() == "none":
        return None
    try:
        return int(value)
    except ValueError as err:
        raise ParameterError(f"--nodata {value!r}: expected an integer or 'none'") from err


@click.command("vectorize")
@click.argument("mask", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--block-size",
    default=DEFAULT_BLOCK_SIZE,
    show_default=True,
    type=click.IntRange(min=1),
    help="Block side in pixels. Memory grows with it (2048: faster, four times the tracing "
    "buffers); the polygons do not change.",
)
@click.option(
    "--scheduler",
    metavar="threads|processes|synchronous|tcp://HOST:PORT",
    help="Dask scheduler that traces the blocks: a local one, or a distributed scheduler address "
    "(default: $GEOMLOPS_DASK_SCHEDULER_ADDRESS if set, else threads).",
)
@click.option("--workers", type=click.IntRange(min=1), help="Threads or processes (default: CPU count).")
@click.option("--band", default=1, show_default=True, type=click.IntRange(min=1), help="Band to vectorize.")
@click.option(
    "--nodata",
    metavar="VALUE|none",
    help="Pixels of this value are not vectorized (default: the band's nodata value).",
)
@click.option(
    "--min-area",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Drop polygons smaller than this, in m² as the area column (no CRS: its units squared).",
)
@click.option(
    "--simplify",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Coverage-preserving simplification tolerance in CRS units (neighbours keep a shared "
    "edge); 0 keeps every pixel corner. Gathers all polygons before writing.",
)
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar over blocks (default: on a terminal)."
)
@click.option(
    "--pixel-coordinates",
    is_flag=True,
    help="Accept a raster without a CRS: write GeoParquet in pixel coordinates (no CRS).",
)
@fail_cleanly
def vectorize_command(
    mask: Path,
    output: Path,
    block_size: int,
    scheduler: str | None,
    workers: int | None,
    band: int,
    nodata: str | None,
    min_area: float,
    simplify: float,
    progress: bool | None,
    pixel_coordinates: bool,
) -> None:
    """Vectorize the class raster MASK into OUTPUT (.parquet or .geojson).

    Each region of equal pixel value (4-connected) becomes one polygon with its value in the
    `class` column and its area in `area`, exactly as if the whole raster were traced at once:
    blocks are read with windowed reads, traced in parallel, and the polygons cut by block
    edges are merged. GeoParquet keeps the raster's CRS; GeoJSON is RFC 7946 (WGS84
    longitude/latitude). The output appears only once complete.

    \b
    Examples:
      geomlops vectorize flood.tif flood.parquet
      geomlops vectorize buildings.tif buildings.geojson --nodata 0 --min-area 10
      geomlops vectorize big.tif big.parquet --scheduler tcp://10.0.0.5:8786
    """
    from geomlops.settings import get_settings
    from postprocessing.vectorize import vectorize_to_file

    scheduler = scheduler or get_settings().dask_scheduler_address or "threads"
    count = vectorize_to_file(
        mask,
        output,
        block_size=block_size,
        scheduler=scheduler,
        workers=workers,
        band=band,
        nodata=_nodata(nodata),  # type: ignore[arg-type]
        min_area=min_area,
        simplify=simplify,
        progress=sys.stderr.isatty() if progress is None else progress,
        pixel_coordinates=pixel_coordinates,
    )
    click.echo(f"wrote {count} polygons to {output}", err=True)
