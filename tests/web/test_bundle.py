"""The committed build of the web app (geomlops/gateway/web_dist) is made from the committed
sources in web/: a machine without Node.js serves exactly what the sources say.

The build writes SOURCES.sha256, the digest of the files it is made from; the first test checks
it against web/ without Node.js (a source changed without ``make web`` fails it). Where Node.js
is installed, the second builds the app again into a scratch folder and compares every file.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "web"
DIST = REPO / "geomlops" / "gateway" / "web_dist"
FIXED = ("index.html", "package.json", "package-lock.json", "tsconfig.json", "vite.config.ts")


def sources_digest(web: Path = WEB) -> str:
    """The digest web/vite.config.ts writes: per source file (sorted) its path and SHA-256."""
    names = sorted(
        [*FIXED, *(p.relative_to(web).as_posix() for p in (web / "src").rglob("*") if p.is_file())]
    )
    whole = hashlib.sha256()
    for name in names:
        whole.update(f"{name}\0{hashlib.sha256((web / name).read_bytes()).hexdigest()}\n".encode())
    return whole.hexdigest()


def test_the_committed_build_is_made_from_the_committed_sources() -> None:
    assert (DIST / "index.html").is_file(), "no built app: run make web and commit geomlops/gateway/web_dist"
    recorded = (DIST / "SOURCES.sha256").read_text(encoding="utf-8").strip()
    assert recorded == sources_digest(), "web/ changed since the app was built: run make web and commit"
    index = (DIST / "index.html").read_text(encoding="utf-8")
    for asset in ("/app/assets/index-", ".js", ".css"):
        assert asset in index
    for ref in [p.split('"')[0] for p in index.split('="/app/')[1:]]:
        assert (DIST / ref).is_file(), f"index.html names {ref}, which is not in the build"
    # offline: nothing in the build is fetched from another host
    for path in DIST.rglob("*"):
        if path.suffix in (".html", ".css"):
            text = path.read_text(encoding="utf-8")
            assert "fonts.googleapis" not in text and '<script src="http' not in text, path


def test_a_rebuild_gives_the_committed_files(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    assert npm is not None, "npm not found: this test rebuilds the web app (install Node.js 20+ with npm)"
    if not (WEB / "node_modules" / ".package-lock.json").is_file():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True, capture_output=True)
    out = tmp_path / "dist"
    built = subprocess.run(
        [npm, "exec", "--", "vite", "build", "--outDir", str(out), "--emptyOutDir"],
        cwd=WEB,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    committed = {p.relative_to(DIST).as_posix(): p.read_bytes() for p in DIST.rglob("*") if p.is_file()}
    rebuilt = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert sorted(rebuilt) == sorted(committed)
    for name, data in rebuilt.items():
        assert data == committed[name], f"{name} differs from a rebuild: run make web and commit"
