"""Synthetic NYU Depth v2 in mmseg's layout: RGB JPEGs and 16-bit PNG depths in millimetres (0 = invalid),
scene-prefixed names (``bedroom_00001``).

Each room is a back wall, a floor that recedes from the camera to the wall, and a few boxes in front; the
image is shaded by depth (nearer is brighter, times a per-surface colour and some noise), so depth is a
learnable function of the image even for a probe on toy features. A few small holes have depth 0 (invalid),
as the Kinect's missing returns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .. import nyu

__all__ = ['generate_synthetic_nyu']

SCENES = ('bedroom', 'kitchen', 'living_room', 'bathroom', 'office')
MAX_DEPTH = 10.0  # metres: NYU's range


def _room_depth(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Depth (H, W) in metres and a surface id per pixel (0 wall, 1 floor, 2.. boxes)."""
    wall = rng.uniform(4.0, 8.0)
    horizon = int(h * rng.uniform(0.35, 0.6))
    depth = np.full((h, w), wall, dtype=np.float64)
    surface = np.zeros((h, w), dtype=np.int64)
    rows = np.arange(horizon, h)
    # the floor: from the wall's depth at the horizon to ~1 m at the bottom row, as a receding plane
    t = (rows - horizon + 1) / (h - horizon)
    depth[horizon:] = (1.0 / (1.0 / wall + t * (1.0 - 1.0 / wall)))[:, None]
    surface[horizon:] = 1
    for k in range(int(rng.integers(1, 4))):
        bh, bw = int(h * rng.uniform(0.15, 0.4)), int(w * rng.uniform(0.1, 0.3))
        top, left = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
        depth[top : top + bh, left : left + bw] = rng.uniform(1.0, wall - 0.5)
        surface[top : top + bh, left : left + bw] = 2 + k
    return depth, surface


def _shade(depth: np.ndarray, surface: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An RGB image (H, W, 3) uint8: brightness falls with depth, a colour per surface, noise."""
    colours = rng.uniform(0.5, 1.0, size=(int(surface.max()) + 1, 3))
    light = 1.0 - 0.85 * depth / MAX_DEPTH  # nearer is brighter
    image = 255.0 * light[..., None] * colours[surface] + rng.normal(0, 6, size=(*depth.shape, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _write_pair(root: Path, split: str, name: str, size: tuple[int, int], rng: np.random.Generator) -> None:
    depth, surface = _room_depth(*size, rng)
    image = _shade(depth, surface, rng)
    millimetres = np.round(depth * 1000.0).astype(np.uint16)
    for _ in range(int(rng.integers(0, 3))):  # holes: no return, depth 0
        y, x = int(rng.integers(0, size[0] - 4)), int(rng.integers(0, size[1] - 4))
        millimetres[y : y + 4, x : x + 4] = 0
    Image.fromarray(image).save(root / 'images' / split / f'{name}.jpg', quality=95)
    Image.fromarray(millimetres).save(root / 'annotations' / split / f'{name}.png')


def generate_synthetic_nyu(
    out: str | Path,
    num_train: int = 8,
    num_test: int = 4,
    size: tuple[int, int] = (96, 128),
    seed: int = 0,
) -> Path:
    """Write ``out/{images,annotations}/{train,test}``; returns ``out``.

    Args:
        size: (height, width) of every image (NYU: 480 x 640; default a quarter of it, 96 x 128, which
            patch 16 divides).
    """
    root = Path(out)
    rng = np.random.default_rng(seed)
    for split, count in zip(nyu.SPLITS, (num_train, num_test)):
        (root / 'images' / split).mkdir(parents=True, exist_ok=True)
        (root / 'annotations' / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            name = f'{SCENES[i % len(SCENES)]}_{i + 1 + (0 if split == "train" else num_train):05d}'
            _write_pair(root, split, name, size, rng)
    return root
