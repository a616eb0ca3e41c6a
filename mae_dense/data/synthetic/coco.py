"""Synthetic COCO 2017 instances: three categories with COCO-style ids (1, 3, 7), filled shapes on a noisy grey
background that never overlap, masks as polygons, compressed and uncompressed RLE, a crowd group and an
empty image; each annotation's ``area`` and ``bbox`` are those of its decoded mask."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image

from .. import coco

__all__ = ['generate_synthetic_coco']

_COCO_COLOURS = {1: (220, 50, 40), 3: (40, 190, 60), 7: (50, 80, 230)}
_COCO_SHAPES = {1: 'disk', 3: 'square', 7: 'triangle'}
_MARGIN = 2  # pixels kept free between two COCO objects


def generate_synthetic_coco(root: str | Path, num_train: int = 8, num_val: int = 4, seed: int = 0) -> Path:
    """Write a tiny COCO 2017 instances set (real JPEGs, polygon and RLE masks) under ``root``.

    Image and annotation ids are unique over both splits. In each split the first image holds one object
    of every category (a compressed RLE disk, a polygon square, a polygon triangle) and an ``iscrowd=1``
    group stored as uncompressed RLE; the last image (when there are two or more) holds no object.

    Args:
        root: The data root (created if missing).
        num_train: Number of training images (at least 1).
        num_val: Number of validation images (at least 1).
        seed: Seed of the images, shapes and sizes; the same seed writes the same files.

    Returns:
        ``root`` as a ``Path``.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f'num_train and num_val must be >= 1, got {num_train} and {num_val}')
    root = Path(root)
    rng = np.random.default_rng(seed)
    next_ids = {'image': 1, 'ann': 1}
    for split, count in (('train', num_train), ('val', num_val)):
        _write_split(root, split, count, rng, next_ids)
    return root


def _write_split(
    root: Path, split: str, count: int, rng: np.random.Generator, next_ids: dict[str, int]
) -> None:
    """Write the JPEGs and the annotation file of one split; advance the shared id counters."""
    img_dir = coco.image_dir_path(root, split)
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        image_id = next_ids['image']
        next_ids['image'] += 1
        height, width = _coco_image_size(index, rng)
        pixels, objects = _draw_image(height, width, _object_plan(index, count, rng), rng)
        file_name = f'{image_id:012d}.jpg'
        Image.fromarray(pixels).save(img_dir / file_name, quality=95)
        images.append(_image_entry(image_id, file_name, width, height))
        for obj in objects:
            annotations.append({'id': next_ids['ann'], 'image_id': image_id, **obj})
            next_ids['ann'] += 1
    data = {
        'info': {
            'description': 'mae-dense synthetic COCO',
            'url': '',
            'version': '1.0',
            'year': 2017,
            'contributor': 'mae-dense',
            'date_created': '2017/09/01',
        },
        'licenses': [{'url': '', 'id': 1, 'name': 'CC0 1.0'}],
        'images': images,
        'annotations': annotations,
        'categories': [dict(category) for category in coco.CATEGORIES],
    }
    ann_file = coco.ann_file_path(root, split)
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(data))


def _image_entry(image_id: int, file_name: str, width: int, height: int) -> dict[str, Any]:
    """An ``images`` entry with COCO's keys."""
    return {
        'license': 1,
        'file_name': file_name,
        'coco_url': '',
        'height': height,
        'width': width,
        'date_captured': '2017-01-01 00:00:00',
        'flickr_url': '',
        'id': image_id,
    }


def _coco_image_size(index: int, rng: np.random.Generator) -> tuple[int, int]:
    """(height, width) with the short side in 64..160: landscape, portrait, then random aspect ratios."""
    short = int(rng.integers(64, 161))
    if index == 0:
        aspect = rng.uniform(1.3, 1.7)
    elif index == 1:
        aspect = 1.0 / rng.uniform(1.3, 1.6)
    else:
        aspect = rng.uniform(0.65, 1.6)
    if aspect >= 1.0:
        return short, int(round(short * aspect))
    return int(round(short / aspect)), short


def _object_plan(index: int, count: int, rng: np.random.Generator) -> list[tuple[int, str]]:
    """The (category id, encoding) of each object of image ``index``; encoding is polygon/rle/crowd."""
    if index == 0:
        return [(1, 'rle'), (3, 'polygon'), (7, 'polygon'), (int(rng.choice([1, 3, 7])), 'crowd')]
    if index == count - 1:
        return []
    plan = []
    for _ in range(int(rng.integers(1, 5))):
        category_id = int(rng.choice([1, 3, 7]))
        encoding = 'rle' if category_id == 1 or rng.random() < 0.3 else 'polygon'
        plan.append((category_id, encoding))
    return plan


def _draw_image(
    height: int, width: int, plan: list[tuple[int, str]], rng: np.random.Generator
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Paint the planned objects without overlap; return the RGB image and the annotations (no ids)."""
    pixels = rng.normal(float(rng.integers(100, 156)), 12.0, size=(height, width, 3))
    taken: list[tuple[float, float, float, float]] = []
    objects = []
    for category_id, encoding in plan:
        shape = _place(height, width, category_id, encoding == 'crowd', taken, rng)
        if shape is None:  # no room left in a small image: drop the object
            continue
        mask, polygon = shape
        colour = np.asarray(_COCO_COLOURS[category_id], dtype=np.float64)
        pixels[mask] = colour + rng.normal(0.0, 8.0, size=(int(mask.sum()), 3))
        objects.append(_annotation(mask, polygon, category_id, encoding))
    return np.clip(pixels, 0, 255).astype(np.uint8), objects


def _place(
    height: int,
    width: int,
    category_id: int,
    crowd: bool,
    taken: list[tuple[float, float, float, float]],
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[float] | None] | None:
    """(mask, polygon or None) ``_MARGIN`` pixels away from the boxes in ``taken`` (appended to).

    Returns None when 200 tries found no room.
    """
    short = min(height, width)
    for attempt in range(200):
        size = short * rng.uniform(0.08, 0.18) * (0.6 if attempt >= 100 else 1.0)
        if crowd:
            mask, polygon = _crowd_mask(height, width, size, rng), None
        else:
            mask, polygon = _shape_mask(height, width, category_id, size, rng)
        if mask.sum() < 20:
            continue
        x, y, w, h = (float(v) for v in mask_utils.toBbox(_encode(mask)))
        box = (x - _MARGIN, y - _MARGIN, x + w + _MARGIN, y + h + _MARGIN)
        if w >= 3 and h >= 3 and not any(_overlap(box, other) for other in taken):
            taken.append(box)
            return mask, polygon
    return None


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    """Whether two xyxy boxes intersect."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _centre(height: int, width: int, radius: float, rng: np.random.Generator) -> tuple[float, float]:
    """A centre (x, y) at least ``radius`` from every border."""
    return float(rng.uniform(radius, width - radius)), float(rng.uniform(radius, height - radius))


def _shape_mask(
    height: int, width: int, category_id: int, size: float, rng: np.random.Generator
) -> tuple[np.ndarray, list[float] | None]:
    """(mask, polygon) of one shape: disk is an ellipse (no polygon); square and triangle are polygons."""
    shape = _COCO_SHAPES[category_id]
    if shape == 'disk':
        cx, cy = _centre(height, width, size, rng)
        return _ellipse(
            height, width, cx, cy, size * rng.uniform(0.75, 1.0), size * rng.uniform(0.75, 1.0)
        ), None
    radius = size * math.sqrt(2.0)
    cx, cy = _centre(height, width, radius, rng)
    angle = rng.uniform(0.0, math.pi / 2)
    if shape == 'square':
        angles = angle + np.array([0.25, 0.75, 1.25, 1.75]) * math.pi
    else:
        angles = angle + np.array([0.0, 2.0, 4.0]) * math.pi / 3 + rng.uniform(-0.2, 0.2, size=3)
    polygon = _polygon(cx, cy, radius, angles)
    return _polygon_mask(height, width, polygon), polygon


def _polygon(cx: float, cy: float, radius: float, angles: np.ndarray) -> list[float]:
    """A COCO polygon ``[x1, y1, x2, y2, ...]`` (2 decimals) of the points at ``angles`` on a circle."""
    points = []
    for angle in angles:
        points += [round(cx + radius * math.cos(angle), 2), round(cy + radius * math.sin(angle), 2)]
    return points


def _polygon_mask(height: int, width: int, polygon: list[float]) -> np.ndarray:
    """Rasterise a polygon exactly as pycocotools' ``annToMask`` does."""
    rle = mask_utils.merge(mask_utils.frPyObjects([polygon], height, width))
    return mask_utils.decode(rle).astype(bool)


def _ellipse(height: int, width: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """The pixels whose centres lie inside the axis-aligned ellipse."""
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    return ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0


def _crowd_mask(height: int, width: int, size: float, rng: np.random.Generator) -> np.ndarray:
    """A group of 3 to 5 small disks around one centre (one ``iscrowd=1`` region)."""
    cx, cy = _centre(height, width, size * 1.5, rng)
    mask = np.zeros((height, width), dtype=bool)
    for _ in range(int(rng.integers(3, 6))):
        radius = max(2.5, size * rng.uniform(0.25, 0.4))
        dx, dy = rng.uniform(-1.0, 1.0, size=2) * (size * 1.5 - radius)
        mask |= _ellipse(height, width, cx + dx, cy + dy, radius, radius)
    return mask


def _encode(mask: np.ndarray) -> dict[str, Any]:
    """Compressed RLE of a boolean mask (pycocotools ``encode``; counts are bytes)."""
    return mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))


def _uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed RLE (column-major run lengths starting with a run of zeros), as COCO's crowd regions."""
    flat = np.asarray(mask, dtype=bool).ravel(order='F')
    starts = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], starts, [flat.size]])).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {'size': [int(mask.shape[0]), int(mask.shape[1])], 'counts': counts}


def _annotation(
    mask: np.ndarray, polygon: list[float] | None, category_id: int, encoding: str
) -> dict[str, Any]:
    """An annotation (without ids) whose ``area`` and ``bbox`` are those of ``mask``.

    ``encoding`` 'polygon' stores ``polygon`` (when the shape has one), 'crowd' an uncompressed RLE with
    ``iscrowd=1``, anything else a compressed RLE with string counts.
    """
    rle = _encode(mask)
    if encoding == 'polygon' and polygon is not None:
        segmentation: Any = [polygon]
    elif encoding == 'crowd':
        segmentation = _uncompressed_rle(mask)
    else:
        segmentation = {'size': rle['size'], 'counts': rle['counts'].decode('ascii')}
    return {
        'category_id': category_id,
        'segmentation': segmentation,
        'area': float(mask_utils.area(rle)),
        'bbox': [float(v) for v in mask_utils.toBbox(rle)],
        'iscrowd': int(encoding == 'crowd'),
    }
