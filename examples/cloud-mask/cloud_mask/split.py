"""Spatially disjoint train/test split over square blocks of the pixel grid.

Pixels are grouped into square blocks; some blocks are test blocks, the rest train.
Train pixels closer than ``buffer + 1`` pixels (Chebyshev distance) to a test block are
excluded, so no train pixel neighbours a test pixel. The features use no neighbourhood
(they are per pixel), so any buffer of at least one pixel already keeps features apart;
the default 16 px (480 m) also blunts the spatial autocorrelation of clouds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from cloud_mask.data import IGNORE_VALUE, POSITIVE_CLASS

EXCLUDED, TRAIN, TEST = 0, 1, 2


@dataclass(frozen=True)
class SplitPlan:
    """Which blocks are test blocks, and how they were chosen.

    Attributes:
        block_size: Side of a block in pixels.
        buffer: Train pixels within this many pixels of a test block are excluded.
        seed: Seed of the random block order.
        attempt: Index of the block order (from the seeded generator) that met the targets.
        test_blocks: ``(block_row, block_col)`` of each test block, sorted.
    """

    block_size: int
    buffer: int
    seed: int
    attempt: int
    test_blocks: tuple[tuple[int, int], ...]


def split_from_blocks(
    shape: tuple[int, int],
    block_size: int,
    test_blocks: tuple[tuple[int, int], ...] | list[tuple[int, int]],
    buffer: int,
) -> NDArray[np.uint8]:
    """Rasterise a block split: 2 in test blocks, 0 in the buffer around them, 1 elsewhere.

    Args:
        shape: ``(height, width)`` of the grid.
        block_size: Side of a block in pixels.
        test_blocks: ``(block_row, block_col)`` of each test block.
        buffer: Width in pixels of the excluded band around each test block.

    Returns:
        uint8 array of :data:`EXCLUDED`, :data:`TRAIN` and :data:`TEST`.
    """
    height, width = shape
    split = np.full(shape, TRAIN, dtype=np.uint8)
    # A block is a rectangle, so "within `buffer` pixels of it" is the rectangle grown by
    # `buffer` on every side: exact, no morphology needed.
    for row, col in test_blocks:
        r0, c0 = row * block_size, col * block_size
        split[
            max(r0 - buffer, 0) : min(r0 + block_size + buffer, height),
            max(c0 - buffer, 0) : min(c0 + block_size + buffer, width),
        ] = EXCLUDED
    for row, col in test_blocks:
        r0, c0 = row * block_size, col * block_size
        split[r0 : r0 + block_size, c0 : c0 + block_size] = TEST
    return split


def _shares(split: NDArray[np.uint8], labels: NDArray[np.uint8]) -> tuple[float, float]:
    """Return the test share of labelled pixels and of positive pixels (train + test)."""
    labelled = labels != IGNORE_VALUE
    positive = labels == POSITIVE_CLASS
    used = split != EXCLUDED
    test = split == TEST
    n_labelled = int(np.count_nonzero(labelled & used))
    n_positive = int(np.count_nonzero(positive & used))
    labelled_share = np.count_nonzero(labelled & test) / n_labelled if n_labelled else 0.0
    positive_share = np.count_nonzero(positive & test) / n_positive if n_positive else 0.0
    return float(labelled_share), float(positive_share)


def plan_split(
    labels: NDArray[np.uint8],
    *,
    block_size: int = 128,
    buffer: int = 16,
    seed: int = 42,
    test_share: tuple[float, float] = (0.25, 0.30),
    positive_share: tuple[float, float] = (0.20, 0.50),
    max_attempts: int = 500,
) -> tuple[SplitPlan, NDArray[np.uint8]]:
    """Choose test blocks so the test set is a fair, spatially disjoint sample.

    Blocks are visited in a seeded random order and added to the test set while the test
    share of labelled pixels stays within ``test_share``. An order is accepted when the
    share reaches the lower bound and the test set also holds a ``positive_share`` of the
    positive (cloud) pixels; otherwise the next order from the same generator is tried.
    Same labels and arguments give the same plan.

    Args:
        labels: uint8 labels (0, 1, :data:`IGNORE_VALUE`).
        block_size: Side of a block in pixels.
        buffer: Width in pixels of the excluded band between train and test.
        seed: Seed of the block order.
        test_share: Accepted range of the test share of labelled train+test pixels.
        positive_share: Accepted range of the test share of positive pixels; ignored when
            the labels hold no positive pixel.
        max_attempts: Block orders to try before giving up.

    Returns:
        The plan and the split raster (see :func:`split_from_blocks`).

    Raises:
        ValueError: If the arguments are out of range or no order meets the targets.
    """
    if block_size < 1 or buffer < 0:
        raise ValueError(f"block_size must be >= 1 and buffer >= 0, got {block_size}, {buffer}")
    height, width = labels.shape
    n_rows, n_cols = -(-height // block_size), -(-width // block_size)
    blocks = [(r, c) for r in range(n_rows) for c in range(n_cols)]
    has_positive = bool(np.any(labels == POSITIVE_CLASS))
    rng = np.random.default_rng(seed)
    for attempt in range(max_attempts):
        chosen: list[tuple[int, int]] = []
        share = 0.0
        for index in rng.permutation(len(blocks)):
            candidate = [*chosen, blocks[int(index)]]
            candidate_share, _ = _shares(
                split_from_blocks(labels.shape, block_size, candidate, buffer), labels
            )
            if candidate_share <= test_share[1]:
                chosen, share = candidate, candidate_share
                if share >= test_share[0]:
                    break
        if share < test_share[0]:
            continue
        split = split_from_blocks(labels.shape, block_size, chosen, buffer)
        _, pos_share = _shares(split, labels)
        if has_positive and not positive_share[0] <= pos_share <= positive_share[1]:
            continue
        plan = SplitPlan(block_size, buffer, seed, attempt, tuple(sorted(chosen)))
        return plan, split
    raise ValueError(
        f"no block order among {max_attempts} puts {test_share} of labelled pixels and "
        f"{positive_share} of positive pixels in test; try another block_size or seed"
    )
