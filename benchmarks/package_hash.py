"""Hashing a model package that holds its own ``.venv``: every file read, against the pruned walk.

Builds a package (the example's files) with a ``.venv`` made of hard links to geomlops' own
environment (thousands of files, no copy), then times, in one run and alternately, the old way
(``rglob`` over everything, only a few cache folders skipped, so the ``.venv`` is read) and
``steps.package.content_hash`` (skipped folders pruned while walking). Prints both and the ratio.

    .venv/bin/python benchmarks/package_hash.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from steps.package import content_hash

REPO = Path(__file__).resolve().parents[1]


def hash_everything(root: Path) -> str:
    """The hash as it was computed before: a walk of every file, ``.venv`` included."""
    digest = hashlib.sha256()
    skip = {"__pycache__", ".git", "mlruns", ".mypy_cache", ".pytest_cache"}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if skip.intersection(rel.parts) or path.suffix == ".pyc":
            continue
        digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "pkg"
        shutil.copytree(
            REPO / "examples" / "cloud-mask", package, ignore=shutil.ignore_patterns("__pycache__")
        )
        venv = Path(sys.prefix)
        subprocess.run(["cp", "-al", str(venv), str(package / ".venv")], check=True)
        files = sum(1 for p in (package / ".venv").rglob("*") if p.is_file())
        old, new = [], []
        for _ in range(args.repeat):
            start = time.perf_counter()
            hash_everything(package)
            old.append(time.perf_counter() - start)
            start = time.perf_counter()
            content_hash(package)
            new.append(time.perf_counter() - start)
    best_old, best_new = min(old), min(new)
    print(f"package with a .venv of {files} files, best of {args.repeat}:")
    print(f"  every file read      {best_old:8.3f} s")
    print(f"  skipped folders pruned {best_new:6.3f} s")
    print(f"  ratio                {best_old / best_new:8.0f}x")


if __name__ == "__main__":
    main()
