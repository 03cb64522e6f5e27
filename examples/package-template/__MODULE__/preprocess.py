"""Turn source GeoTIFFs into the training dataset (here: copy them)."""

import argparse
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    for path in sorted(args.source.glob("*.tif")):
        shutil.copy2(path, args.output / path.name)


if __name__ == "__main__":
    main()
