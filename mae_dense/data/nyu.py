"""NYU Depth v2 on disk: the layout checker, the converter of the official labeled set, and the file lists of
the ~24k-image raw-scene split (BTS). Plain numpy/PIL/h5py/scipy: nothing here imports mmengine or mmseg.

The layout mmseg's ``NYUDataset`` reads (``data/nyu`` by default)::

    nyu/
        images/{train,test}/<scene>_<index>.jpg        # RGB
        annotations/{train,test}/<scene>_<index>.png   # 16-bit depth in millimetres, 0 = invalid

The official labeled set (``nyu_depth_v2_labeled.mat``, MATLAB v7.3 = HDF5: ``images`` (N, 3, W, H) uint8,
``depths`` (N, W, H) metres, ``scenes`` (1, N) references to char arrays) with its split
(``splits.mat``, MATLAB v5: ``trainNdxs`` 795 and ``testNdxs`` 654 one-based indices) converts to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from .ade20k import _check_image, _files_by_key, _one_line, _unpaired_message

__all__ = [
    'DEFAULT_DATA_ROOT',
    'SPLITS',
    'check_nyu',
    'check_nyu_dirs',
    'convert_labeled_mat',
    'read_file_list',
]

DEFAULT_DATA_ROOT = 'data/nyu'
SPLITS = ('train', 'test')
IMG_SUFFIX, DEPTH_SUFFIX = '.jpg', '.png'
_HOW_TO_GET_DATA = (
    'make synthetic data with `python -m mae_dense.data.synthetic nyu -o DIR` or convert the official '
    'labeled set with `python tools/dataset_converters/nyu.py nyu_depth_v2_labeled.mat splits.mat -o data/nyu`'
)
_SIXTEEN_BIT = ('I;16', 'I;16B', 'I;16L', 'I')


def _check_depth_png(path: Path) -> tuple[int, int]:
    """Open a depth PNG's header; refuse anything but single-channel 16-bit (an 8-bit one is a common slip)."""
    try:
        with Image.open(path) as im:
            size, mode = im.size, im.mode
            im.verify()
    except Exception as e:  # PIL raises many types
        raise DataError(f'unreadable depth map {path}: {_one_line(e)}') from None
    if mode not in _SIXTEEN_BIT:
        raise DataError(
            f'depth map {path} has PIL mode {mode!r}: expected a single-channel 16-bit PNG of millimetres '
            '(an 8-bit PNG cannot hold NYU depths)'
        )
    return size


def check_nyu_dirs(img_dir: str | Path, ann_dir: str | Path) -> list[tuple[Path, Path]]:
    """Check that every ``.jpg`` in ``img_dir`` has a 16-bit ``.png`` depth of the same size in ``ann_dir``.

    Returns:
        Sorted (image, depth) path pairs.

    Raises:
        DataError: one line naming the first unpaired, unreadable, 8-bit or mis-sized file.
    """
    img_dir, ann_dir = Path(img_dir), Path(ann_dir)
    for directory, what in ((img_dir, 'image'), (ann_dir, 'depth')):
        if not directory.is_dir():
            raise DataError(f'NYU {what} directory {directory} not found ({_HOW_TO_GET_DATA})')
    images, depths = _files_by_key(img_dir, IMG_SUFFIX), _files_by_key(ann_dir, DEPTH_SUFFIX)
    if not images:
        raise DataError(f'no {IMG_SUFFIX} images in {img_dir}')
    if missing := sorted(images.keys() - depths.keys()):
        raise DataError(_unpaired_message(missing, 'images', img_dir, ann_dir))
    if orphans := sorted(depths.keys() - images.keys()):
        raise DataError(_unpaired_message(orphans, 'depth maps', ann_dir, img_dir))
    pairs = [(images[k], depths[k]) for k in sorted(images)]
    check_pairs(pairs)
    return pairs


def check_pairs(pairs: Iterable[tuple[Path, Path]]) -> None:
    """Each (image, depth) pair readable, the depth 16-bit and of the image's size."""
    for image, depth in pairs:
        for path in (image, depth):
            if not path.is_file():
                raise DataError(f'NYU file {path} not found')
        image_size, depth_size = _check_image(image), _check_depth_png(depth)
        if image_size != depth_size:
            raise DataError(
                f'depth map {depth} is {depth_size[0]}x{depth_size[1]} but image {image} is '
                f'{image_size[0]}x{image_size[1]} (width x height); they must match'
            )


def check_nyu(data_root: str | Path, split: str = 'train') -> list[tuple[Path, Path]]:
    """Check ``data_root/{images,annotations}/split`` (see :func:`check_nyu_dirs`)."""
    root = Path(data_root)
    if split not in SPLITS:
        raise DataError(f'NYU split {split!r} unknown, expected one of {SPLITS}')
    if not root.is_dir():
        raise DataError(f'NYU data root {root} not found ({_HOW_TO_GET_DATA})')
    img_dir, ann_dir = root / 'images' / split, root / 'annotations' / split
    if not img_dir.is_dir() or not ann_dir.is_dir():
        raise DataError(f'NYU split {split!r} missing under {root}: expected {img_dir} and {ann_dir}')
    return check_nyu_dirs(img_dir, ann_dir)


def read_file_list(list_file: str | Path, image_root: str | Path, depth_root: str | Path) -> list[tuple[Path, Path]]:
    """(image, depth) paths of a BTS-style file list: ``<image> <depth> <focal>`` per line.

    The ~24k-image split of the raw NYU scenes (``nyudepthv2_train_files_with_gt.txt``: ``/scene/rgb_X.jpg
    /scene/sync_depth_X.png 518.8579``); lines whose depth is ``None`` (no ground truth) are skipped, as BTS
    does. Paths are relative to ``image_root``/``depth_root``.
    """
    path = Path(list_file)
    if not path.is_file():
        raise DataError(f'NYU file list {path} not found')
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise DataError(f'{path}:{number}: expected "<image> <depth> [focal]", got {line.strip()!r}')
        if fields[1] == 'None':
            continue
        pairs.append((Path(image_root) / fields[0].lstrip('/'), Path(depth_root) / fields[1].lstrip('/')))
    if not pairs:
        raise DataError(f'NYU file list {path} lists no image with a depth map')
    return pairs


# --------------------------------------------------------------------------------------------- converter


def _scene_names(mat, count: int) -> list[str]:
    """The ``scenes`` cell array of the labeled .mat (HDF5 references to uint16 char arrays)."""
    if 'scenes' not in mat:
        return ['scene'] * count
    refs = np.asarray(mat['scenes']).reshape(-1)
    return [''.join(chr(int(c)) for c in np.asarray(mat[ref]).reshape(-1)) for ref in refs]


def _split_indices(splits_mat: Path) -> dict[str, np.ndarray]:
    """{'train': zero-based indices, 'test': ...} from ``splits.mat`` (one-based ``trainNdxs``/``testNdxs``)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(splits_mat)
    except Exception as e:
        raise DataError(f'unreadable split file {splits_mat}: {_one_line(e)}') from None
    out = {}
    for split, key in (('train', 'trainNdxs'), ('test', 'testNdxs')):
        if key not in mat:
            raise DataError(f'split file {splits_mat} has no {key!r} (expected the official splits.mat)')
        out[split] = np.asarray(mat[key]).reshape(-1).astype(np.int64) - 1
    return out


def convert_labeled_mat(labeled_mat: str | Path, splits_mat: str | Path, out: str | Path) -> dict[str, int]:
    """Write the official labeled set in mmseg's NYU layout under ``out``: JPEG (quality 95) and 16-bit PNG
    depths in millimetres (rounded; 0 stays invalid), named ``<scene>_<one-based index:05d>``.

    Returns:
        Images written per split.
    """
    import h5py

    labeled_mat, out = Path(labeled_mat), Path(out)
    splits = _split_indices(Path(splits_mat))
    try:
        mat = h5py.File(labeled_mat, 'r')
    except Exception as e:
        raise DataError(f'unreadable labeled set {labeled_mat}: {_one_line(e)} (expected nyu_depth_v2_labeled.mat)') from None
    with mat:
        for key in ('images', 'depths'):
            if key not in mat:
                raise DataError(f'{labeled_mat} has no {key!r} (expected nyu_depth_v2_labeled.mat)')
        images, depths = mat['images'], mat['depths']  # (N, 3, W, H), (N, W, H): MATLAB's column order
        scenes = _scene_names(mat, len(images))
        counts = {}
        for split, indices in splits.items():
            if indices.min(initial=0) < 0 or indices.max(initial=0) >= len(images):
                raise DataError(f'{splits_mat}: {split} indices outside 1..{len(images)}')
            img_dir, ann_dir = out / 'images' / split, out / 'annotations' / split
            img_dir.mkdir(parents=True, exist_ok=True)
            ann_dir.mkdir(parents=True, exist_ok=True)
            for i in indices:
                name = f'{scenes[i]}_{i + 1:05d}'
                rgb = np.asarray(images[i]).transpose(2, 1, 0)  # (H, W, 3)
                millimetres = np.round(np.asarray(depths[i], dtype=np.float64).T * 1000.0)  # (H, W)
                Image.fromarray(np.ascontiguousarray(rgb.astype(np.uint8))).save(img_dir / f'{name}.jpg', quality=95)
                Image.fromarray(np.clip(millimetres, 0, 65535).astype(np.uint16)).save(ann_dir / f'{name}.png')
            counts[split] = len(indices)
    return counts
