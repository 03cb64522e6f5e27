"""Which bands the gateway's map tiles draw as red, green and blue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

from geomlops.gateway.imagery import describe, render_tile


def test_imagery_without_band_names_is_drawn_in_its_own_colours(tmp_path: Path) -> None:
    """Drone imagery names no band but says red, green, blue in its colour interpretation:
    the tiles are in colour, not the first band in grey."""
    path = tmp_path / "drone.tif"
    profile = {"driver": "GTiff", "height": 64, "width": 64, "count": 3, "dtype": "uint8"}
    profile |= {"crs": "EPSG:32645", "transform": from_origin(338000, 3058000, 0.5, 0.5)}
    red = np.tile(np.arange(64, dtype="uint8") * 4, (64, 1))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.stack([red, 255 - red, np.full_like(red, 40)]))
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    _bbox, bands, names = describe(str(path), {})
    assert bands == ["band 1", "band 2", "band 3"] and names == ["red", "green", "blue"]
    west, south, east, north = _bbox
    z = 19  # a tile about 60 m wide over the 32 m image: its centre is inside
    n = 2**z
    x, y = (
        int(((west + east) / 2 + 180) / 360 * n),
        int((1 - np.arcsinh(np.tan(np.radians((south + north) / 2))) / np.pi) / 2 * n),
    )
    from io import BytesIO

    from PIL import Image

    pixels = np.asarray(Image.open(BytesIO(render_tile(str(path), names, z, x, y))).convert("RGBA"))
    drawn = pixels[pixels[..., 3] > 0]
    assert len(drawn) and not (drawn[:, 0] == drawn[:, 1]).all()  # colour, not grey
