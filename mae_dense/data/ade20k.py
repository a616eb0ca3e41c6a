"""ADE20K (ADEChallengeData2016) on disk: a synthetic generator, a layout checker and the zip converter.

Plain numpy/PIL: nothing here imports mmengine, mmseg or mmdet. The layout is the one mmseg's ADE20K
configs read (``data/ade/ADEChallengeData2016`` by default)::

    ADEChallengeData2016/
        images/{training,validation}/ADE_{train,val}_XXXXXXXX.jpg
        annotations/{training,validation}/ADE_{train,val}_XXXXXXXX.png   # uint8, 0 = other, 1..150

Label 0 is "other" and is ignored in training (``reduce_zero_label``: 0 -> 255, k -> k - 1).
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from ..errors import DataError

__all__ = [
    'DEFAULT_DATA_ROOT',
    'SPLITS',
    'TOP_FOLDER',
    'DataError',
    'check_ade20k',
    'check_split_dirs',
    'convert_official_zip',
    'generate_synthetic_ade20k',
]

TOP_FOLDER = 'ADEChallengeData2016'
DEFAULT_DATA_ROOT = f'data/ade/{TOP_FOLDER}'
SPLITS = ('training', 'validation')
IMG_SUFFIX = '.jpg'
SEG_SUFFIX = '.png'
_STEM_PREFIX = {'training': 'ADE_train_', 'validation': 'ADE_val_'}
_HOW_TO_GET_DATA = (
    'make synthetic data with `python tools/dataset_converters/make_synthetic_ade20k.py -o DIR` '
    'or convert the official zip with `python tools/dataset_converters/ade20k.py '
    'ADEChallengeData2016.zip -o data/ade`'
)
_NAMES_SHOWN = 3


# --------------------------------------------------------------------------------------------- generator


def _class_colours(num_classes: int) -> np.ndarray:
    """A fixed (seed-independent) RGB colour per label 0..num_classes, so the set is learnable."""
    colours = np.random.default_rng(2016).integers(30, 226, size=(num_classes + 1, 3))
    colours[0] = 128  # "other": mid grey, told apart from the classes only by its larger noise
    return colours.astype(np.float32)


def _active_classes(num_classes: int, count: int) -> np.ndarray:
    """``count`` class ids spread over 1..num_classes (first and last included) shared by both splits."""
    count = max(1, min(count, num_classes))
    return np.unique(np.linspace(1, num_classes, count).round().astype(np.int64))


def _image_size(index: int, total: int, rng: np.random.Generator) -> tuple[int, int]:
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
    for split, count in zip(SPLITS, (num_train, num_val)):
        img_dir, ann_dir = _split_dirs(root, split)
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        classes = _class_stream(active, rng)
        for i in range(count):
            image, label = _synthetic_pair(_image_size(i, count, rng), classes, colours, rng)
            stem = f'{_STEM_PREFIX[split]}{i + 1:08d}'
            Image.fromarray(image).save(img_dir / f'{stem}{IMG_SUFFIX}', quality=95)
            Image.fromarray(label).save(ann_dir / f'{stem}{SEG_SUFFIX}')
    return root


# ----------------------------------------------------------------------------------------------- checker


def _split_dirs(root: Path, split: str) -> tuple[Path, Path]:
    return root / 'images' / split, root / 'annotations' / split


def _files_by_key(directory: Path, suffix: str) -> dict[str, Path]:
    """Files under ``directory`` (recursively, as mmseg lists them) keyed by relative path minus suffix."""
    return {
        path.relative_to(directory).as_posix()[: -len(suffix)]: path
        for path in directory.rglob(f'*{suffix}')
        if path.is_file()
    }


def _unpaired_message(keys: list[str], what: str, where: Path, other: Path) -> str:
    shown = ', '.join(keys[:_NAMES_SHOWN]) + (', ...' if len(keys) > _NAMES_SHOWN else '')
    return f'{len(keys)} {what} in {where} have no counterpart in {other}: {shown}'


def _ends_with_eoi(path: Path) -> bool:
    """Whether a JPEG's end-of-image marker is in its last bytes (missing on truncated files)."""
    with path.open('rb') as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 64))
        return b'\xff\xd9' in f.read()


def _check_image(path: Path) -> tuple[int, int]:
    """Open and verify a JPEG; decode it (at 1/8 scale, cheap) only when its end marker is missing."""
    try:
        with Image.open(path) as im:
            size = im.size
            im.verify()
        if not _ends_with_eoi(path):
            with Image.open(path) as im:
                im.draft('RGB', (max(1, size[0] // 8), max(1, size[1] // 8)))
                im.load()
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        raise DataError(f'unreadable image {path}: {_one_line(e)}') from None
    return size


def _check_label(path: Path, num_classes: int, check_values: bool) -> tuple[int, int]:
    """Open a label PNG, check it is single-channel uint8 and (optionally) its values are 0..num_classes."""
    try:
        with Image.open(path) as im:
            size, mode = im.size, im.mode
            if mode not in ('L', 'P'):
                raise DataError(
                    f'label {path} has PIL mode {mode!r}, expected a single-channel uint8 PNG (L or P)'
                )
            if not check_values:
                im.verify()
                return size
            _, high = im.getextrema() if mode == 'L' else _palette_extrema(im)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f'unreadable label {path}: {_one_line(e)}') from None
    if high > num_classes:
        raise DataError(
            f'label {path} has max value {high} > {num_classes} '
            f'(ADE20K labels are 0..{num_classes}, 0 = other/ignore)'
        )
    return size


def _palette_extrema(im: Image.Image) -> tuple[int, int]:
    """Min and max palette index (the stored values, not the colours)."""
    values = np.asarray(im)
    return int(values.min()), int(values.max())


def _one_line(error: BaseException) -> str:
    return ' '.join(f'{type(error).__name__}: {error}'.split())


def check_split_dirs(
    img_dir: str | Path, ann_dir: str | Path, num_classes: int = 150, check_values: bool = True
) -> list[tuple[Path, Path]]:
    """Check that every ``.jpg`` in ``img_dir`` has a readable ``.png`` label of the same size in ``ann_dir``.

    Args:
        img_dir: Directory of JPEG images (searched recursively, like mmseg).
        ann_dir: Directory of PNG labels with the same relative stems.
        num_classes: Largest valid label value.
        check_values: Decode every label and check its values are in 0..num_classes.

    Returns:
        Sorted (image, label) path pairs.

    Raises:
        DataError: One line naming the first problem found.
    """
    img_dir, ann_dir = Path(img_dir), Path(ann_dir)
    for directory, what in ((img_dir, 'image'), (ann_dir, 'annotation')):
        if not directory.is_dir():
            raise DataError(f'{what} directory {directory} not found')
    images = _files_by_key(img_dir, IMG_SUFFIX)
    labels = _files_by_key(ann_dir, SEG_SUFFIX)
    if not images:
        raise DataError(f'no {IMG_SUFFIX} images in {img_dir}')
    if missing := sorted(images.keys() - labels.keys()):
        raise DataError(_unpaired_message(missing, 'images', img_dir, ann_dir))
    if orphans := sorted(labels.keys() - images.keys()):
        raise DataError(_unpaired_message(orphans, 'labels', ann_dir, img_dir))
    pairs = [(images[key], labels[key]) for key in sorted(images)]
    for image, label in pairs:
        image_size = _check_image(image)
        label_size = _check_label(label, num_classes, check_values)
        if image_size != label_size:
            raise DataError(
                f'label {label} is {label_size[0]}x{label_size[1]} but image {image} is '
                f'{image_size[0]}x{image_size[1]} (width x height); they must match'
            )
    return pairs


def check_ade20k(
    data_root: str | Path, split: str = 'training', num_classes: int = 150, check_values: bool = True
) -> list[tuple[Path, Path]]:
    """Verify one split of an ADEChallengeData2016 folder and return its sorted (image, label) pairs.

    Args:
        data_root: The ``ADEChallengeData2016`` folder (mmseg's default: ``data/ade/ADEChallengeData2016``).
        split: ``'training'`` or ``'validation'``.
        num_classes: Largest valid label value (150 for ADE20K).
        check_values: Decode every label PNG and check its values (the slow part: ~1 ms per label).

    Raises:
        DataError: One line naming the missing/unpaired/unreadable file or out-of-range value.
    """
    if split not in SPLITS:
        raise DataError(f'ADE20K split {split!r} unknown, expected one of {SPLITS}')
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(
            f'ADE20K data root {root} not found (mmseg configs default to {DEFAULT_DATA_ROOT}); '
            f'{_HOW_TO_GET_DATA}'
        )
    img_dir, ann_dir = _split_dirs(root, split)
    for directory in (img_dir, ann_dir):
        if not directory.is_dir():
            raise DataError(
                f'{directory} not found: an ADE20K root needs images/{split} and annotations/{split}'
            )
    return check_split_dirs(img_dir, ann_dir, num_classes=num_classes, check_values=check_values)


# --------------------------------------------------------------------------------------------- converter


def _safe_member_path(name: str) -> PurePosixPath:
    """A zip member's path, refusing absolute paths and ``..`` (zip-slip)."""
    path = PurePosixPath(name.replace('\\', '/'))
    if path.is_absolute() or '..' in path.parts or (path.parts and ':' in path.parts[0]):
        raise DataError(f'refusing zip member {name!r}: absolute path or ".." would write outside the output')
    return path


def _open_zip(zip_path: Path) -> zipfile.ZipFile:
    if not zip_path.is_file():
        raise DataError(f'ADE20K zip {zip_path} not found (download ADEChallengeData2016.zip first)')
    if not zipfile.is_zipfile(zip_path):
        raise DataError(f'{zip_path} is not a zip file (expected the official ADEChallengeData2016.zip)')
    return zipfile.ZipFile(zip_path)


def _members_to_extract(archive: zipfile.ZipFile, zip_path: Path) -> list[zipfile.ZipInfo]:
    """Validate every member name, then keep those under the top folder; check the four split dirs exist."""
    members = [(info, _safe_member_path(info.filename)) for info in archive.infolist()]
    kept = [info for info, path in members if path.parts and path.parts[0] == TOP_FOLDER]
    present = {
        PurePosixPath(*path.parts[1:3]).as_posix()
        for _, path in members
        if len(path.parts) > 3 and path.parts[0] == TOP_FOLDER
    }
    needed = [f'{kind}/{split}' for kind in ('images', 'annotations') for split in SPLITS]
    if absent := [d for d in needed if d not in present]:
        tops = sorted({path.parts[0] for _, path in members if path.parts})[:_NAMES_SHOWN]
        raise DataError(
            f'{zip_path} is not the official ADE20K zip: no files under {TOP_FOLDER}/{absent[0]} '
            f'(top-level entries: {tops}; expected {TOP_FOLDER}/images|annotations/training|validation)'
        )
    return kept


def convert_official_zip(zip_path: str | Path, out_dir: str | Path) -> Path:
    """Extract the official ``ADEChallengeData2016.zip`` to ``out_dir/ADEChallengeData2016`` and check it.

    Extraction goes to a temporary folder beside the target, renamed into place once both splits pass
    ``check_ade20k(..., check_values=False)``, so a failed run leaves nothing half-written.

    Args:
        zip_path: The official zip (top folder ``ADEChallengeData2016/``).
        out_dir: Where the ``ADEChallengeData2016`` folder goes (mmseg's default: ``data/ade``).

    Returns:
        The extracted ``ADEChallengeData2016`` folder.

    Raises:
        DataError: Missing file, not a zip, wrong contents, unsafe member path, existing target, bad layout.
    """
    zip_path, out_dir = Path(zip_path), Path(out_dir)
    target = out_dir / TOP_FOLDER
    if target.exists():
        raise DataError(f'{target} already exists; remove it (or pick another -o) to convert again')
    with _open_zip(zip_path) as archive:
        members = _members_to_extract(archive, zip_path)
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f'.{TOP_FOLDER}.', dir=out_dir))
        try:
            archive.extractall(staging, members=members)
            for split in SPLITS:
                try:
                    check_ade20k(staging / TOP_FOLDER, split, check_values=False)
                except DataError as e:
                    raise DataError(
                        f'{zip_path} (extracted to a temporary folder, now removed): {e}'
                    ) from None
            (staging / TOP_FOLDER).rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
