"""An on-disk cache of frozen-backbone features and their labels (plain numpy).

A cache is a directory with ``features.npy`` (N, C, h, w), ``labels.npy`` (N, H, W) and ``meta.json``. The
arrays are written in place through memory maps (one row per crop, any process may write any row) into
``<dir>.partial`` and become ``<dir>`` only when complete, so an interrupted extraction is never read. The
directory name is a key: the sha256 of the backbone checkpoint's bytes and of everything else that
determines the features (model and crop configs, precision), see :func:`cache_key`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError, ToolError

FORMAT_VERSION = 1
_FEATURES, _LABELS, _META = 'features.npy', 'labels.npy', 'meta.json'
_DTYPES = ('float16', 'float32')


def cache_key(spec: Mapping) -> str:
    """Hex sha256 of ``spec`` as canonical JSON (sorted keys; non-JSON values by ``str``)."""
    text = json.dumps(dict(spec, format_version=FORMAT_VERSION), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def is_complete(directory: str | os.PathLike) -> bool:
    return (Path(directory) / _META).is_file()


@contextlib.contextmanager
def locked(directory: str | os.PathLike, enabled: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on ``<directory>.lock`` (``flock``): runs that need the same cache at the
    same time (several seeds of one backbone on several GPUs) build it once, the others wait and reuse it."""
    if not enabled:
        yield
        return
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.with_name(directory.name + '.lock'), 'w') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def required_bytes(
    num: int, feature_shape: Sequence[int], label_shape: Sequence[int], dtype: str, label_dtype: str
) -> int:
    per_row = int(np.prod(feature_shape)) * np.dtype(dtype).itemsize
    return num * (per_row + int(np.prod(label_shape)) * np.dtype(label_dtype).itemsize)


class FeatureCacheWriter:
    """Fills ``<directory>.partial`` row by row; :meth:`commit` turns it into ``<directory>``.

    One process creates the arrays (``create=True``); others open the same files (``create=False``) and
    write their own rows, so a distributed extraction splits the crops over the ranks.

    Args:
        directory: the final cache directory.
        num: number of crops (rows).
        feature_shape: (C, h, w) of one crop's features.
        label_shape: (H, W) of one crop's labels.
        dtype: feature dtype on disk, ``'float16'`` or ``'float32'``.
        label_dtype: label dtype on disk (``'uint8'`` holds 150 classes and the ignore index 255).
        create: allocate the arrays (one process) or open them (the others).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        num: int,
        feature_shape: Sequence[int],
        label_shape: Sequence[int],
        dtype: str = 'float16',
        label_dtype: str = 'uint8',
        create: bool = True,
    ) -> None:
        if dtype not in _DTYPES:
            raise ToolError(f'feature cache dtype={dtype!r}: expected one of {_DTYPES}')
        self.directory = Path(directory)
        self.partial = self.directory.with_name(self.directory.name + '.partial')
        mode = 'w+' if create else 'r+'
        if create:
            need = required_bytes(num, feature_shape, label_shape, dtype, label_dtype)
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.partial, ignore_errors=True)  # a stale, interrupted extraction
            free = shutil.disk_usage(self.partial.parent).free
            if need > free:  # a memory map that outgrows the disk kills the process (SIGBUS) mid-write
                raise ToolError(
                    f'{self.partial.parent}: the feature cache needs {need / 2**30:.1f} GiB '
                    f'({num} crops x {tuple(feature_shape)} {dtype}), {free / 2**30:.1f} GiB free; '
                    'point probe_cache_root elsewhere or use fewer crops'
                )
            self.partial.mkdir()
        self.features = np.lib.format.open_memmap(
            self.partial / _FEATURES, mode=mode, dtype=dtype, shape=(num, *feature_shape)
        )
        self.labels = np.lib.format.open_memmap(
            self.partial / _LABELS, mode=mode, dtype=label_dtype, shape=(num, *label_shape)
        )

    def write(self, indices: Sequence[int], features: np.ndarray, labels: np.ndarray) -> None:
        """Rows ``indices`` := ``features`` (n, C, h, w) and ``labels`` (n, H, W), cast to the disk dtypes."""
        idx = np.asarray(indices)
        self.features[idx] = features
        self.labels[idx] = labels

    def flush(self) -> None:
        self.features.flush()
        self.labels.flush()

    def commit(self, meta: Mapping) -> Path:
        """Write ``meta.json`` and move the complete cache to its final name."""
        self.flush()
        payload = dict(
            meta,
            format_version=FORMAT_VERSION,
            num=int(self.features.shape[0]),
            feature_shape=list(self.features.shape[1:]),
            label_shape=list(self.labels.shape[1:]),
            dtype=str(self.features.dtype),
        )
        (self.partial / _META).write_text(json.dumps(payload, indent=2, default=str))
        shutil.rmtree(self.directory, ignore_errors=True)
        os.replace(self.partial, self.directory)
        return self.directory


class FeatureCache:
    """Read access to a complete cache: ``cache[i]`` is (features (C, h, w), labels (H, W)) as numpy.

    The arrays are memory-mapped on first access in each process (a pickled cache carries only its path,
    so dataloader workers never copy the arrays).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        if not is_complete(self.directory):
            raise DataError(
                f'{self.directory}: no complete feature cache (meta.json missing); '
                '`mae-dense probe CONFIG --mode fast` builds it'
            )
        self.meta = json.loads((self.directory / _META).read_text())
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.meta['num'])

    def _open(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            self._arrays = (
                np.load(self.directory / _FEATURES, mmap_mode='r'),
                np.load(self.directory / _LABELS, mmap_mode='r'),
            )
        return self._arrays

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        features, labels = self._open()
        return np.asarray(features[i]), np.asarray(labels[i])

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _arrays=None)
