"""ADE20K (ADEChallengeData2016) on disk: the layout checker and the zip converter.

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
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from ..errors import DataError

__all__ = [
    'DEFAULT_DATA_ROOT',
    'SPLITS',
    'TOP_FOLDER',
    'check_ade20k',
    'check_split_dirs',
    'convert_official_zip',
    'split_dirs',
]

TOP_FOLDER = 'ADEChallengeData2016'
DEFAULT_DATA_ROOT = f'data/ade/{TOP_FOLDER}'
SPLITS = ('training', 'validation')
IMG_SUFFIX = '.jpg'
SEG_SUFFIX = '.png'
STEM_PREFIX = {'training': 'ADE_train_', 'validation': 'ADE_val_'}
_HOW_TO_GET_DATA = (
    'make synthetic data with `python -m mae_dense.data.synthetic ade20k -o DIR` '
    'or convert the official zip with `python tools/dataset_converters/ade20k.py '
    'ADEChallengeData2016.zip -o data/ade`'
)
_NAMES_SHOWN = 3


# ----------------------------------------------------------------------------------------------- checker


def split_dirs(root: Path, split: str) -> tuple[Path, Path]:
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
    img_dir, ann_dir = split_dirs(root, split)
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
