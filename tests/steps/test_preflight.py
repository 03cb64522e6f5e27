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
