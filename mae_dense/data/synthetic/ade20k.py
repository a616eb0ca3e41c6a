"""Synthetic ADE20K (``ADEChallengeData2016``): rectangles and ellipses, one class id each in the label PNG and
a fixed per-class colour plus noise in the JPEG; sizes vary (portrait, landscape, a side under 64)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import DataError
from .. import ade20k

__all__ = ['generate_synthetic_ade20k']


def _class_colours(num_classes: int) -> np.ndarray:
    """A fixed (seed-independent) RGB colour per label 0..num_classes, so the set is learnable."""
    colours = np.random.default_rng(2016).integers(30, 226, size=(num_classes + 1, 3))
    colours[0] = 128  # "other": mid grey, told apart from the classes only by its larger noise
    return colours.astype(np.float32)


def _active_classes(num_classes: int, count: int) -> np.ndarray:
    """``count`` class ids spread over 1..num_classes (first and last included) shared by both splits."""
    count = max(1, min(count, num_classes))
    return np.unique(np.linspace(1, num_classes, count).round().astype(np.int64))


def _ade_image_size(index: int, total: int, rng: np.random.Generator) -> tuple[int, int]:
    """(height, width): landscape, portrait, tiny (short side < 64), then random shapes."""
    tiny_index = min(2, total - 1)
    short = int(rng.integers(40, 64)) if index == tiny_index else int(rng.integers(64, 161))
    if index == 0:
        aspect = rng.uniform(1.3, 1.8)
    elif index == 1:
        aspect = 1.0 / rng.uniform(1.3, 1.65)  # 1 / aspect stays >= 0.6
    else:
        aspect = rng.uniform(0.6, 1.8)
    if aspect >= 1.0:
        return short, int(round(short * aspect))
    return int(round(short / aspect)), short


def _draw_shape(label: np.ndarray, value: int, rng: np.random.Generator) -> None:
    """Fill a random rectangle or ellipse of ``label`` with ``value`` in place."""
    h, w = label.shape
    ch, cw = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
    rh, rw = rng.uniform(0.1, 0.35) * h, rng.uniform(0.1, 0.35) * w
    yy, xx = np.mgrid[0:h, 0:w]
    if rng.random() < 0.5:
        mask = (np.abs(yy - ch) <= rh) & (np.abs(xx - cw) <= rw)
    else:
        mask = ((yy - ch) / rh) ** 2 + ((xx - cw) / rw) ** 2 <= 1.0
    label[mask] = value


def _synthetic_pair(
    size: tuple[int, int], classes: Iterator[int], colours: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One (RGB uint8 image, uint8 label) pair: a background class, 2-4 shapes, sometimes an "other" blob."""
    label = np.full(size, next(classes), dtype=np.uint8)
    for _ in range(int(rng.integers(2, 5))):
        _draw_shape(label, next(classes), rng)
    if rng.random() < 0.5:
        _draw_shape(label, 0, rng)
    noise_scale = np.where(label == 0, 40.0, 12.0)[..., None]
    image = colours[label] + rng.normal(size=(*size, 3)) * noise_scale
    return np.clip(image, 0, 255).astype(np.uint8), label


def _class_stream(active: np.ndarray, rng: np.random.Generator) -> Iterator[int]:
    """Endless shuffled passes over ``active``, so every class appears once enough shapes are drawn."""
    while True:
        yield from (int(c) for c in rng.permutation(active))


def generate_synthetic_ade20k(
    root: str | Path,
    num_train: int = 8,
    num_val: int = 4,
    seed: int = 0,
    num_classes: int = 150,
    num_active_classes: int = 12,
) -> Path:
    """Write a tiny, learnable dataset in the exact ADEChallengeData2016 layout.

    Each image is a few rectangles/ellipses, each a class id in the label PNG and a fixed per-class colour
    plus noise in the JPEG. Sizes vary (short side 40..160, aspect 0.6..1.8; portrait, landscape and a
    side under 64 in each split). Deterministic given ``seed``.

    Args:
        root: Output directory (the ``ADEChallengeData2016`` folder itself); created if needed.
        num_train: Number of training pairs.
        num_val: Number of validation pairs.
        seed: Seed of the random layout and noise.
        num_classes: Labels take values in 0..num_classes (0 = other/ignore).
        num_active_classes: How many class ids (spread over 1..num_classes) the shapes use.

    Returns:
        ``root`` as a Path.
    """
    if num_train < 1 or num_val < 1 or num_classes < 1 or num_classes > 255:
        raise DataError(
            f'generate_synthetic_ade20k: need num_train >= 1, num_val >= 1 and 1 <= num_classes <= 255, '
            f'got {num_train}, {num_val}, {num_classes}'
        )
    root = Path(root)
    rng = np.random.default_rng(seed)
    colours = _class_colours(num_classes)
    active = _active_classes(num_classes, num_active_classes)
    for split, count in zip(ade20k.SPLITS, (num_train, num_val)):
        img_dir, ann_dir = ade20k.split_dirs(root, split)
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        classes = _class_stream(active, rng)
        for i in range(count):
            image, label = _synthetic_pair(_ade_image_size(i, count, rng), classes, colours, rng)
            stem = f'{ade20k.STEM_PREFIX[split]}{i + 1:08d}'
            Image.fromarray(image).save(img_dir / f'{stem}{ade20k.IMG_SUFFIX}', quality=95)
            Image.fromarray(label).save(ann_dir / f'{stem}{ade20k.SEG_SUFFIX}')
    return root
