"""README.md works as written: its shell blocks run, copied literally, top to bottom, in a fresh
copy of the repository, as a new user would run them.

Every ``bash`` block is preceded by a comment saying whether this test runs it:
``<!-- readme: run -->``, or ``<!-- readme: not run: WHY -->`` for what needs what a test
machine cannot give (a cluster, a second shell holding a server). A line inside a run block may
be left out only when ``<!-- readme: skip-line "LINE": WHY -->`` names it (``make test`` is
this very suite).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
_RUN = re.compile(r"<!-- readme: run -->\n$")
_NOT_RUN = re.compile(r"<!-- readme: not run: (?P<why>[^>]{10,}) -->\n$")
_SKIP_LINE = re.compile(r'<!-- readme: skip-line "(?P<line>[^"]+)": (?P<why>[^>]{10,}) -->\n')


@dataclass(frozen=True)
class Block:
    """One fenced shell block of the README."""

    line: int
    text: str
    runs: bool
    why_not: str | None


def shell_blocks(text: str) -> list[Block]:
    """Every ``bash``/``sh`` block with the decision written above it.

    Raises:
        AssertionError: a block without a decision, naming its line.
    """
    blocks = []
    for match in _FENCE.finditer(text):
        if match.group(1) not in ("bash", "sh"):
            continue
        before = text[: match.start()]
        line = before.count("\n") + 1
        tail = before[-300:]
        not_run = _NOT_RUN.search(tail)
        assert _RUN.search(tail) or not_run, (
            f"README.md:{line}: a shell block needs '<!-- readme: run -->' or "
            "'<!-- readme: not run: WHY -->' on the line above it"
        )
        blocks.append(Block(line, match.group(2), not not_run, not_run.group("why") if not_run else None))
    return blocks


def runnable_script(text: str) -> str:
    """The run blocks as one bash script (variables and an activated venv carry over, as in one
    terminal), minus the lines a ``skip-line`` comment names."""
    skipped = {m.group("line") for m in _SKIP_LINE.finditer(text)}
    parts = ["set -euo pipefail"]
    for block in shell_blocks(text):
        if not block.runs:
            continue
        lines = [ln for ln in block.text.splitlines() if ln.split("#")[0].strip() not in skipped]
        parts += [f"echo '### README.md:{block.line}' >&2", *lines]
    return "\n".join(parts) + "\n"


def test_every_shell_block_says_whether_it_runs() -> None:
    blocks = shell_blocks(README.read_text())
    assert [b for b in blocks if b.runs], "no README block runs"
    for block in blocks:
        assert block.runs or block.why_not


def test_a_block_without_a_decision_is_named() -> None:
    with pytest.raises(AssertionError, match=r"README.md:3: a shell block needs"):
        shell_blocks("# t\n\n```bash\nls\n```\n")
    script = runnable_script(
        '<!-- readme: skip-line "make test": it is this very test suite -->\n'
        "<!-- readme: run -->\n```bash\nmake demo\nmake test    # all\n```\n"
        "<!-- readme: not run: needs a cluster to apply to -->\n```bash\nkubectl apply\n```\n"
    )
    assert "make demo" in script and "make test" not in script and "kubectl" not in script


def _fresh_copy(dest: Path) -> Path:
    """The repository's files as a fresh clone has them (tracked and not ignored), in a new git
    repository, so that what the README's commands leave behind shows in ``git status``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "fresh"]):
        subprocess.run(["git", *args], cwd=dest, check=True, capture_output=True)
    return dest


@pytest.mark.slow
@pytest.mark.timeout(2400)  # a fresh environment, two demo trainings, batch inference, promotions
def test_the_readme_runs_as_written(tmp_path: Path) -> None:
    repo = _fresh_copy(tmp_path / "geomlops")
    script = runnable_script(README.read_text())
    venv_bin = str(ROOT / ".venv" / "bin")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GEOMLOPS_", "MLFLOW_", "VIRTUAL_ENV", "UV_PROJECT", "PYTEST"))
    }
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=repo,
        env=env,
        stdin=subprocess.DEVNULL,  # not a terminal: nothing waits for an answer
        capture_output=True,
        text=True,
        timeout=2400,
    )
    last = done.stderr.rsplit("### ", 1)[-1][-3000:]
    assert done.returncode == 0, f"failed in {last}\n--- stdout tail:\n{done.stdout[-3000:]}"
    home = repo / ".geomlops"
    outputs = home / "predictions" / "cloud-mask" / "v1" / "demo"
    for name in ("predictions.parquet", "predictions.geojson", "quicklook.png", "mask.tif"):
        assert (outputs / name).is_file(), name
    assert "Succeeded" in done.stdout
    # nothing written into the checkout but the ignored work folder and environment
    left = subprocess.run(
        ["git", "status", "--porcelain", "--ignored=no"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    assert left == "", f"the README's commands left files in the repository:\n{left}"
