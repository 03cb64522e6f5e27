"""Pictures drawn where matplotlib's own folder cannot be written (a task of the local runner's
sandbox: the host's home is read-only there): the font cache goes to the work folder, once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DRAW = """
import sys
from steps._quicklook import pyplot
plt = pyplot()
fig, ax = plt.subplots()
ax.set_title("geomlops")
fig.savefig(sys.argv[1])
"""


def draw(tmp_path: Path, name: str, unwritable: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MPLCONFIGDIR"}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    # a file where one of matplotlib's folders would be made: it cannot be written
    (tmp_path / unwritable).write_text("not a folder")
    env["GEOMLOPS_HOME"] = str(tmp_path / "home")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-c", DRAW, str(tmp_path / name)]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=True)


@pytest.mark.parametrize("unwritable", ["config", "cache"])
def test_matplotlib_s_cache_goes_to_the_work_folder_where_its_own_cannot_be_written(
    tmp_path: Path, unwritable: str
) -> None:
    first = draw(tmp_path, "a.png", unwritable)
    assert "not a writable directory" not in first.stderr, first.stderr
    assert "temporary cache directory" not in first.stderr
    cache = tmp_path / "home" / "cache" / "matplotlib"
    assert list(cache.glob("fontlist-*.json"))  # built once, then read by every picture
    second = draw(tmp_path, "b.png", unwritable)
    assert "building the font cache" not in second.stderr.lower(), second.stderr
    assert (tmp_path / "a.png").stat().st_size > 1000 and (tmp_path / "b.png").stat().st_size > 1000
