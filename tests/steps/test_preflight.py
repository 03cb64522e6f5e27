"""Checks made before a run starts (``steps.preflight``), called as ``geomlops run`` calls them."""

from __future__ import annotations

from pathlib import Path

import pytest

from geomlops.errors import ParameterError
from steps.preflight import preflight


def test_a_package_that_is_not_there_is_refused_and_nothing_is_made(tmp_path: Path) -> None:
    typo = tmp_path / "water-msk"
    for given in (str(typo), f"file://{typo}"):
        with pytest.raises(ParameterError, match=rf"parameter 'package' '{given}': no such folder or file"):
            preflight("registration", {"package": given})
    assert list(tmp_path.iterdir()) == []
    typo.mkdir()  # there: the registration's own checks read it
    preflight("registration", {"package": str(typo)})
    preflight("registration", {"package": "git+https://example.org/models.git@v1"})  # read by the task


@pytest.mark.parametrize(
    "bbox", ["-86.958,30.722,-86.950,30.730", "[-86.9, 30.7, -86.8, 30.8]", "-86.9 30.7 -86.8 30.8"]
)
def test_a_bounding_box_given_as_the_aoi_is_named_so(bbox: str) -> None:
    from steps.batch import check_batch_locations

    with pytest.raises(
        ParameterError, match=r"parameter 'aoi' .*: a bounding box; expected GeoJSON in WGS84, as a file"
    ):
        check_batch_locations("/data/scene.tif", bbox)
    check_batch_locations("/data/scene.tif", "/data/aoi.geojson")
    check_batch_locations("/data/scene.tif", '{"type": "Polygon", "coordinates": []}')  # read by the run
