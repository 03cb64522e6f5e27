"""Train the U-Net on the chips ``test.txt`` does not hold out; log the pyfunc ``model``.

Started by geomlops' training workflow (or ``mlflow run -e train``) in the package's own
environment: :func:`mlflow.start_run` joins the experiment and tags MLflow's variables name.
Random 256-pixel crops with flips, Adam, binary cross-entropy plus Dice loss; a few epochs fit
on a CPU in well under a minute for the Banepa chips.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import rasterio
import torch
import torch.nn.functional as F

from building_footprints.data import CLASSES, chip_pairs, dataset_record, read_rgb, scale
from building_footprints.model import SIGNATURE, BuildingSegmenter
from building_footprints.net import UNet, receptive_field_radius

PACKAGE_DIR = Path(__file__).resolve().parent


def load(pairs: list[tuple[Path, Path]]) -> tuple[np.ndarray, np.ndarray]:
    images = np.stack([scale(read_rgb(chip)) for chip, _ in pairs])
    labels = []
    for _, label in pairs:
        with rasterio.open(label) as src:
            labels.append(src.read(1))
    return images, np.stack(labels).astype(np.float32)[:, None]


def crops(
    images: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random crop of ``size`` (flipped at random) of every chip."""
    n, _, height, width = images.shape
    size = min(size, height, width)
    xs, ys = [], []
    for i in range(n):
        r, c = rng.integers(0, height - size + 1), rng.integers(0, width - size + 1)
        x, y = images[i, :, r : r + size, c : c + size], labels[i, :, r : r + size, c : c + size]
        if rng.random() < 0.5:
            x, y = x[..., ::-1], y[..., ::-1]
        if rng.random() < 0.5:
            x, y = x[..., ::-1, :], y[..., ::-1, :]
        xs.append(np.ascontiguousarray(x))
        ys.append(np.ascontiguousarray(y))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    return bce + dice


def _pip_requirements() -> list[str]:
    import yaml

    declared = yaml.safe_load((PACKAGE_DIR.parent / "python_env.yaml").read_text(encoding="utf-8"))
    return [str(d) for d in declared["dependencies"]]


def train(data: Path, *, epochs: int, crop: int, batch_size: int, lr: float, width: int,
          downsample: int, seed: int) -> str:  # fmt: skip
    """Fit and log; returns the run id."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pairs = chip_pairs(data, test=False)
    if not pairs:
        raise ValueError(f"{data}: every chip is held out in test.txt; nothing to train on")
    images, labels = load(pairs)
    net = UNet(width=width, downsample=downsample)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    params = {"epochs": epochs, "crop": crop, "batch_size": batch_size, "lr": lr, "width": width,
              "downsample": downsample, "seed": seed, "train_chips": len(pairs)}  # fmt: skip
    with mlflow.start_run() as run:
        mlflow.log_params(params)
        started = time.perf_counter()
        for epoch in range(epochs):
            net.train()
            x, y = crops(images, labels, crop, rng)
            order = torch.randperm(len(x))
            total = 0.0
            for start in range(0, len(x), batch_size):
                index = order[start : start + batch_size]
                optimiser.zero_grad()
                loss = loss_fn(net(x[index]), y[index])
                loss.backward()
                optimiser.step()
                total += float(loss) * len(index)
            mlflow.log_metric("train_loss", total / len(x), step=epoch)
        mlflow.log_metric("train_seconds", time.perf_counter() - started)
        radius = receptive_field_radius(net)
        mlflow.log_metric("receptive_field_radius", radius)
        mlflow.log_dict(dataset_record(data), "dataset/dataset.json")
        mlflow.log_dict({"classes": list(CLASSES)}, "classes.json")
        with tempfile.TemporaryDirectory() as tmp:
            weights, config = Path(tmp) / "weights.pt", Path(tmp) / "config.json"
            torch.save(net.state_dict(), weights)
            config.write_text(json.dumps({"net": net.config(), "receptive_field_radius": radius}))
            mlflow.pyfunc.log_model(
                name="model",
                python_model=BuildingSegmenter(),
                artifacts={"weights": str(weights), "config": str(config)},
                signature=SIGNATURE,
                code_paths=[str(PACKAGE_DIR)],
                pip_requirements=_pip_requirements(),
                model_config={"device": "cpu"},
            )
        return str(run.info.run_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--downsample", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    # one thread by default: the net is small, and OpenMP threads spinning against other
    # processes on a shared machine made training many times slower than one thread
    torch.set_num_threads(max(1, args.threads))
    run_id = train(args.data, epochs=args.epochs, crop=args.crop, batch_size=args.batch_size, lr=args.lr,
                   width=args.width, downsample=args.downsample, seed=args.seed)  # fmt: skip
    print(f"run {run_id}: model logged as runs:/{run_id}/model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
