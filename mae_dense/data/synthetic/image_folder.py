"""A synthetic ImageNet-style image folder: a few smooth sinusoid mixtures per class (MAE can learn them)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import DataError

__all__ = ['generate_synthetic_image_folder']


def _smooth_image(size: int, freqs: np.ndarray, colours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A sum of a few oriented sinusoids, one colour each: smooth, so masked patches are predictable."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    img = np.full((size, size, 3), 0.5)
    for (fy, fx), colour in zip(freqs, colours):
        phase = rng.uniform(0, 2 * math.pi)
        wave = np.sin(2 * math.pi * (fy * yy + fx * xx) + phase)
        img += 0.25 * wave[..., None] * colour
    img += rng.normal(0.0, 0.01, img.shape)  # a little sensor noise
    return (np.clip(img, 0.0, 1.0) * 255).round().astype(np.uint8)


def generate_synthetic_image_folder(
    root: str | Path,
    num_classes: int = 4,
    images_per_class: int = 16,
    size: int = 64,
    seed: int = 0,
    split: str = 'train',
) -> Path:
    """Write a small, learnable ImageNet-style folder of real JPEGs: ``root/<split>/class_k/*.jpg``.

    Each class has its own few spatial frequencies and colours; images of a class differ in phase and
    noise. Deterministic given ``seed``.

    Args:
        root: dataset root (created if needed); use it as ``train_dataloader.dataset.data_root``.
        num_classes: class sub-folders.
        images_per_class: JPEGs per class.
        size: image side in pixels.
        seed: seed of the layout and noise.
        split: sub-folder of ``root``.

    Returns:
        ``root`` as a Path.
    """
    if num_classes < 1 or images_per_class < 1 or size < 8:
        raise DataError(
            'generate_synthetic_image_folder: need num_classes >= 1, images_per_class >= 1 and size >= 8, '
            f'got {num_classes}, {images_per_class}, {size}'
        )
    root = Path(root)
    rng = np.random.default_rng(seed)
    for c in range(num_classes):
        folder = root / split / f'class_{c:03d}'
        folder.mkdir(parents=True, exist_ok=True)
        freqs = rng.uniform(-3.0, 3.0, size=(3, 2))  # at most 3 periods across the image: smooth
        colours = rng.uniform(-1.0, 1.0, size=(3, 3))
        for i in range(images_per_class):
            image = _smooth_image(size, freqs, colours, rng)
            Image.fromarray(image).save(folder / f'img_{i:05d}.jpg', quality=95)
    return root
