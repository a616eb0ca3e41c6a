"""ImageNet-style image folder for MAE pretraining (plain PyTorch/PIL; mmengine registration in
``mae_dense.openmmlab.pretrain``).

Layout: ``DATA_ROOT/<split>/`` holds images, either in class sub-folders (``train/n01440764/*.JPEG``, the
ImageNet layout; labels are the sorted folder names) or directly (flat; label -1). Labels are kept for
reference only: MAE pretraining ignores them.

Augmentation is the official recipe (``main_pretrain.py``): ``RandomResizedCrop(224, scale=(0.2, 1.0),
bicubic)`` then a horizontal flip, both drawn from torch's RNG (so mmengine's seeding and the resume hook
cover them). Samples are ``uint8`` CHW tensors; normalisation happens in the model's data preprocessor,
on the device, after the 4x smaller uint8 batch has been copied.

Unreadable files (truncated, not an image) do not stop a multi-day run: the next readable image takes the
sample's place, a warning names the file, and each sample reports how many files it passed over, so the
trainer can count them across loader workers and processes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, RandomHorizontalFlip, RandomResizedCrop

from ..errors import DataError

__all__ = ['IMG_EXTENSIONS', 'ImageFolder', 'list_image_folder']

logger = logging.getLogger(__name__)

# torchvision's ImageFolder extensions; matched case-insensitively (ImageNet uses .JPEG).
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')
# What PIL raises for files that are not (complete) images; a bug elsewhere still surfaces.
_UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
_HINT = 'point a config at a folder with --cfg-options train_dataloader.dataset.data_root=DIR'


def _is_image(name: str) -> bool:
    return not name.startswith('.') and name.lower().endswith(IMG_EXTENSIONS)


def _scan(directory: Path) -> list[str]:
    """Image files under ``directory`` (recursively, following links), relative POSIX paths, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
        rel = Path(dirpath).relative_to(directory)
        found.extend((rel / f).as_posix() for f in filenames if _is_image(f))
    return sorted(found)


def list_image_folder(split_dir: str | Path) -> tuple[list[str], list[int], list[str]]:
    """List an image folder.

    Args:
        split_dir: ``DATA_ROOT/<split>``.

    Returns:
        relative paths (sorted), their labels (index of the class sub-folder, -1 for files directly in
        ``split_dir``), and the class names (sorted sub-folder names).

    Raises:
        DataError: the folder does not exist or holds no image.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DataError(
            f'{split_dir}: pretraining image folder not found (expected DATA_ROOT/{split_dir.name}/ with '
            f'images, flat or in class sub-folders); {_HINT}'
        )
    paths = _scan(split_dir)
    if not paths:
        raise DataError(
            f'{split_dir}: no images found (extensions {", ".join(IMG_EXTENSIONS)}, any case); {_HINT}'
        )
    classes = sorted({p.split('/', 1)[0] for p in paths if '/' in p})
    index = {c: i for i, c in enumerate(classes)}
    labels = [index[p.split('/', 1)[0]] if '/' in p else -1 for p in paths]
    return paths, labels, classes


class ImageFolder(torch.utils.data.Dataset):
    """Images of ``DATA_ROOT/<split>/`` with the MAE pretraining augmentation.

    The folder is listed on first use (or by :meth:`full_init`, which mmengine's Runner calls right after
    building the dataset), so building a config does not walk ImageNet.

    Args:
        data_root: dataset root; images are read from ``data_root/split``.
        split: sub-folder (``'train'``).
        img_size: output side (224).
        scale: area range of the random crop (0.2, 1.0).
        ratio: aspect-ratio range of the random crop (3/4, 4/3), torchvision's default.
        hflip_prob: probability of a horizontal flip.
        interpolation: ``'bicubic'`` (official) or ``'bilinear'``.

    Each sample is ``dict(inputs=uint8 (3, img_size, img_size), skipped=0 or 1)``; ``skipped`` is 1 when
    the file at that index was unreadable and the next readable image took its place.
    """

    def __init__(
        self,
        data_root: str | Path,
        split: str = 'train',
        img_size: int = 224,
        scale: Sequence[float] = (0.2, 1.0),
        ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
        hflip_prob: float = 0.5,
        interpolation: str = 'bicubic',
    ) -> None:
        if interpolation not in ('bicubic', 'bilinear'):
            raise DataError(f"interpolation={interpolation!r}: expected 'bicubic' or 'bilinear'")
        self.data_root = Path(data_root)
        self.split = split
        self.split_dir = self.data_root / split
        self.img_size = int(img_size)
        self.crop = RandomResizedCrop(
            self.img_size,
            scale=tuple(scale),
            ratio=tuple(ratio),
            interpolation=InterpolationMode(interpolation),
        )
        self.flip = RandomHorizontalFlip(hflip_prob)
        self._paths: np.ndarray | None = None  # bytes array: no per-item objects to copy into workers
        self._labels: np.ndarray | None = None
        self.classes: list[str] = []
        self.num_skipped = 0  # samples that stood in for an unreadable file, in this process
        self._bad: set[int] = set()  # unreadable indices found by this process (each worker has its own)

    # ------------------------------------------------------------------------------------------- listing
    def full_init(self) -> None:
        """List the folder (idempotent); raises :class:`DataError` for a missing or empty folder."""
        if self._paths is not None:
            return
        paths, labels, self.classes = list_image_folder(self.split_dir)
        self._paths = np.array([p.encode() for p in paths], dtype=np.bytes_)
        self._labels = np.array(labels, dtype=np.int32)
        self._log(logging.INFO, f'{self.split_dir}: {len(paths)} images, {len(self.classes)} class folders')

    @property
    def metainfo(self) -> dict:
        """mmengine stores this in checkpoints and compares it on resume (so no paths: data may move)."""
        self.full_init()
        return dict(classes=tuple(self.classes), num_images=len(self._paths))

    def __len__(self) -> int:
        self.full_init()
        return len(self._paths)

    def path(self, index: int) -> Path:
        self.full_init()
        return self.split_dir / self._paths[index].decode()

    def label(self, index: int) -> int:
        self.full_init()
        return int(self._labels[index])

    # ------------------------------------------------------------------------------------------- reading
    def _load(self, index: int) -> Image.Image | None:
        """The RGB image at ``index``; ``None`` (and one warning per file) if it cannot be read."""
        if index in self._bad:
            return None
        path = self.path(index)
        try:
            with Image.open(path) as img:
                return img.convert('RGB')  # also forces the full decode inside the try
        except _UNREADABLE as exc:
            self._bad.add(index)
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._log(
                logging.WARNING,
                f'{path}: unreadable image skipped ({reason}); {len(self._bad)} unreadable files found so far '
                'in this loader process',
            )
            return None

    def _log(self, level: int, msg: str) -> None:
        """Python logging here; the mmengine registration routes it to the run's log."""
        logger.log(level, msg)

    def load_rgb(self, index: int) -> tuple[Image.Image, int]:
        """The image at ``index`` or, if it is unreadable, the next readable one.

        Returns:
            the image and 1 if it stands in for an unreadable file (0 otherwise): summed over an epoch,
            the number of unreadable files the sampler drew.
        """
        n = len(self)
        for offset in range(n):
            img = self._load((index + offset) % n)
            if img is not None:
                skipped = int(offset > 0)
                self.num_skipped += skipped
                return img, skipped
        raise DataError(f'{self.split_dir}: none of the {n} images could be read')

    def __getitem__(self, index: int) -> dict:
        img, skipped = self.load_rgb(index)
        img = self.flip(self.crop(img))  # official order: crop, then flip
        array = np.asarray(img, dtype=np.uint8)  # (H, W, 3)
        inputs = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
        return dict(inputs=inputs, skipped=skipped)
