"""Run a manifest with LocalRunner in its own process (the test then kills it).

Usage: run_detached.py MANIFEST RUNS_DIR RUN_ID PARAMS_JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from geomlops.argo.runner import LocalRunner


def main() -> None:
    """Run the manifest given on the command line."""
    manifest = yaml.safe_load(Path(sys.argv[1]).read_text())
    runner = LocalRunner(Path(sys.argv[2]), progress=False)
    runner.run(manifest, json.loads(sys.argv[4]), run_id=sys.argv[3])


if __name__ == "__main__":
    main()
