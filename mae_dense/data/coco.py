"""COCO 2017 (instances) on disk: the layout checker.

Plain numpy/PIL/pycocotools: nothing here imports mmengine or mmdet. The layout is the one mmdet's COCO
configs read (``data/coco`` by default)::

    coco/
        annotations/instances_{train,val}2017.json
        {train,val}2017/000000000001.jpg ...

:data:`CATEGORIES` are those of the synthetic set (:mod:`mae_dense.data.synthetic`): three categories with
COCO-style, non-contiguous ids (1, 3, 7).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import DataError

__all__ = [
    'CATEGORIES',
    'DEFAULT_DATA_ROOT',
    'SPLITS',
    'ann_file_path',
    'check_coco',
    'check_classes',
    'check_coco_files',
    'coco_classes',
    'image_dir_path',
]

DEFAULT_DATA_ROOT = 'data/coco'
SPLITS = ('train', 'val')
CATEGORIES: tuple[dict[str, Any], ...] = (
    {'supercategory': 'shape', 'id': 1, 'name': 'disk'},
    {'supercategory': 'shape', 'id': 3, 'name': 'square'},
    {'supercategory': 'shape', 'id': 7, 'name': 'triangle'},
)
_TOP_LEVEL_KEYS = ('images', 'annotations', 'categories')
_IMAGE_KEYS = ('id', 'file_name', 'width', 'height')
_ANN_KEYS = ('id', 'image_id', 'category_id', 'bbox', 'area')
_CATEGORY_KEYS = ('id', 'name')
_NAMES_SHOWN = 3
_HOW_TO_GET_DATA = (
    'make synthetic data with `python -m mae_dense.data.synthetic coco -o DIR` or download COCO 2017'
)


def ann_file_path(data_root: str | Path, split: str) -> Path:
    """``data_root/annotations/instances_{split}2017.json``."""
    return Path(data_root) / 'annotations' / f'instances_{split}2017.json'


def image_dir_path(data_root: str | Path, split: str) -> Path:
    """``data_root/{split}2017``."""
    return Path(data_root) / f'{split}2017'


def check_classes(classes: Sequence[str], ann_file: str | Path) -> None:
    """Every class name a config asks for must be a category of the annotation file.

    mmdet maps names to category ids silently: a name the file lacks shortens its label table, and the run
    then dies in ``results2json`` after the whole evaluation (``IndexError: list index out of range``).
    """
    _check_class_names(classes, coco_classes(ann_file), ann_file)


def _check_class_names(classes: Sequence[str], names: Sequence[str], ann_file: str | Path) -> None:
    missing = [c for c in classes if c not in set(names)]
    if missing:
        shown = ', '.join(map(repr, names[:_NAMES_SHOWN])) + (', ...' if len(names) > _NAMES_SHOWN else '')
        raise DataError(
            f'{ann_file}: class {missing[0]!r} of the config ({len(missing)} of its {len(classes)} classes are '
            f'missing) is not a category name of this file ({len(names)} categories: {shown}); set the '
            "dataset's metainfo=dict(classes=...) to the file's names, or classes_from_ann_file=True"
        )


def coco_classes(ann_file: str | Path) -> tuple[str, ...]:
    """The category names of an annotation file in its ``categories`` order (the order mmdet labels them)."""
    data = _load_json(Path(ann_file))
    categories = _require_list(data, 'categories', Path(ann_file))
    return tuple(str(category['name']) for category in categories)


# --------------------------------------------------------------------------------------------- checker


def check_coco(
    data_root: str | Path,
    split: str = 'train',
    *,
    check_sizes: bool = False,
    classes: Sequence[str] | None = None,
) -> dict[str, int]:
    """Check one split of a COCO 2017 layout; raise a one-line ``DataError`` on the first problem.

    Args:
        data_root: The folder holding ``annotations/`` and ``{train,val}2017/``.
        split: ``'train'`` or ``'val'``.
        check_sizes: Also open every image and compare its size with the declared width/height.
        classes: Class names a config asks for; each must be a category name (see :func:`check_classes`).

    Returns:
        Counts: ``images``, ``annotations``, ``categories``, ``images_without_objects``.
    """
    if split not in SPLITS:
        raise DataError(f'unknown COCO split {split!r}; expected one of {", ".join(SPLITS)}')
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f'COCO data root {root} does not exist; {_HOW_TO_GET_DATA}')
    return check_coco_files(
        ann_file_path(root, split), image_dir_path(root, split), check_sizes=check_sizes, classes=classes
    )


def check_coco_files(
    ann_file: str | Path,
    img_dir: str | Path | None,
    *,
    check_sizes: bool = False,
    classes: Sequence[str] | None = None,
) -> dict[str, int]:
    """Check an instances annotation file and (unless ``img_dir`` is None) the images it names.

    Args:
        ann_file: The COCO instances JSON.
        img_dir: The folder that ``file_name`` is relative to, or None to skip the image files.
        check_sizes: Also open every image and compare its size with the declared width/height.
        classes: Class names a config asks for; each must be a category name (see :func:`check_classes`).

    Returns:
        Counts: ``images``, ``annotations``, ``categories``, ``images_without_objects``.
    """
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise DataError(f'missing COCO annotation file {ann_file}')
    if img_dir is not None and not Path(img_dir).is_dir():
        raise DataError(f'missing COCO image directory {img_dir} (for {ann_file.name})')
    data = _load_json(ann_file)
    images = _check_entries(_require_list(data, 'images', ann_file), _IMAGE_KEYS, 'images', ann_file)
    categories = _check_entries(
        _require_list(data, 'categories', ann_file), _CATEGORY_KEYS, 'categories', ann_file
    )
    annotations = _check_entries(
        _require_list(data, 'annotations', ann_file), _ANN_KEYS, 'annotations', ann_file
    )
    _check_references(annotations, images, categories, ann_file)
    if img_dir is not None:
        _check_image_files(images, Path(img_dir), ann_file, check_sizes)
    if classes is not None:  # from the file already parsed here: a large file is read once
        names = [str(c['name']) for c in _require_list(data, 'categories', ann_file)]
        _check_class_names(classes, names, ann_file)
    annotated = {ann['image_id'] for ann in annotations.values()}
    return {
        'images': len(images),
        'annotations': len(annotations),
        'categories': len(categories),
        'images_without_objects': sum(image_id not in annotated for image_id in images),
    }


def _load_json(path: Path) -> dict[str, Any]:
    """Parse a JSON object; a syntax error names the file, line, column and character offset."""
    try:
        with path.open('rb') as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DataError(f'missing COCO annotation file {path}') from None
    except json.JSONDecodeError as e:
        raise DataError(
            f'{path}: malformed JSON at line {e.lineno} column {e.colno} (char {e.pos}): {e.msg}'
        ) from None
    except UnicodeDecodeError as e:
        raise DataError(f'{path}: not UTF-8 text (byte {e.start}): {e.reason}') from None
    if not isinstance(data, dict):
        raise DataError(f'{path}: top level is a JSON {type(data).__name__}, expected an object')
    return data


def _require_list(data: dict[str, Any], key: str, path: Path) -> list[Any]:
    """``data[key]`` if it is a list; a missing key names every missing top-level key."""
    missing = [k for k in _TOP_LEVEL_KEYS if k not in data]
    if key not in data:
        raise DataError(f'{path}: missing top-level key(s) {", ".join(map(repr, missing))}')
    if not isinstance(data[key], list):
        raise DataError(f'{path}: top-level key {key!r} is a {type(data[key]).__name__}, expected a list')
    return data[key]


def _check_entries(
    entries: list[Any], keys: Sequence[str], section: str, path: Path
) -> dict[Any, dict[str, Any]]:
    """Index the entries of a section by id; each must be an object with ``keys`` and a unique id."""
    by_id: dict[Any, dict[str, Any]] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DataError(f'{path}: {section}[{index}] is a {type(entry).__name__}, expected an object')
        missing = [key for key in keys if key not in entry]
        if missing:
            where = f'{section}[{index}]' + (f' (id {entry["id"]})' if 'id' in entry else '')
            raise DataError(f'{path}: {where} lacks key(s) {", ".join(map(repr, missing))}')
        if entry['id'] in by_id:
            raise DataError(f'{path}: duplicate id {entry["id"]!r} in {section!r}')
        by_id[entry['id']] = entry
    return by_id


def _check_references(
    annotations: dict[Any, dict[str, Any]],
    images: dict[Any, dict[str, Any]],
    categories: dict[Any, dict[str, Any]],
    path: Path,
) -> None:
    """Every annotation names a declared image and a declared category and has a 4-number bbox whose width
    and height are not negative."""
    declared = ', '.join(map(str, categories)) or 'none'
    for ann_id, ann in annotations.items():
        if ann['image_id'] not in images:
            raise DataError(
                f'{path}: annotation id {ann_id} points to image_id {ann["image_id"]!r}, not in "images"'
            )
        if ann['category_id'] not in categories:
            raise DataError(
                f'{path}: annotation id {ann_id} has category_id {ann["category_id"]!r} that is not declared '
                f'in "categories" (declared: {declared})'
            )
        bbox = ann['bbox']
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise DataError(f'{path}: annotation id {ann_id} has bbox {bbox!r}, expected [x, y, w, h]')
        if bbox[2] < 0 or bbox[3] < 0:
            side = 'width' if bbox[2] < 0 else 'height'
            raise DataError(
                f'{path}: annotation id {ann_id} has bbox {bbox!r} with a negative {side}; COCO boxes are '
                '[x, y, width, height] with width and height >= 0'
            )


def _is_number(value: Any) -> bool:
    """An int or float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_image_files(
    images: dict[Any, dict[str, Any]], img_dir: Path, path: Path, check_sizes: bool
) -> None:
    """Every ``file_name`` exists under ``img_dir`` (and, optionally, has the declared size)."""
    missing = [
        image['file_name'] for image in images.values() if not (img_dir / image['file_name']).is_file()
    ]
    if missing:
        raise DataError(
            f'{img_dir}: {len(missing)} image file(s) named in {path.name} are missing: {_first(missing)}'
        )
    if not check_sizes:
        return
    wrong = []
    for image in images.values():
        size = _image_file_size(img_dir / image['file_name'])
        if size != (image['width'], image['height']):
            wrong.append(
                f'{image["file_name"]} is {size[0]}x{size[1]} not {image["width"]}x{image["height"]}'
            )
    if wrong:
        raise DataError(
            f'{img_dir}: {len(wrong)} image(s) differ from the width x height declared in {path.name}: '
            f'{_first(wrong)}'
        )


def _image_file_size(path: Path) -> tuple[int, int]:
    """(width, height) read from the image header."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError) as e:
        raise DataError(f'{path}: unreadable image ({type(e).__name__}: {e})'.replace('\n', ' ')) from None


def _first(items: list[str]) -> str:
    """The first few items, comma-separated, with an ellipsis when there are more."""
    shown = ', '.join(items[:_NAMES_SHOWN])
    return shown + (', ...' if len(items) > _NAMES_SHOWN else '')
