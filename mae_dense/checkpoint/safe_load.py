"""The project's one checkpoint-loading policy.

Untrusted files never execute code:

1. Every file is first read with ``torch.load(weights_only=True)``: tensors, containers and primitives only.
   Released backbones and models (official MAE, timm, mmseg, ViTDet) load here.
2. Training checkpoints need a few more globals: mmengine's message hub (``HistoryBuffer``, numpy arrays,
   scalars and dtypes) and the official MAE repo's ``args`` (``argparse.Namespace``). They are read by a
   restricted unpickler that resolves only the explicit allow-list below. ``HistoryBuffer`` pickles its
   statistics methods as ``getattr(HistoryBuffer, 'mean')``; ``getattr`` is therefore allowed *only* on the
   allow-listed classes and only for their public attributes, never in general.
3. Anything else is refused with one line that names the global and says how to re-save the file.

There is no ``weights_only=False`` switch and no environment variable that turns the policy off.
"""

from __future__ import annotations

import _compat_pickle
import hashlib
import io
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from ..errors import CheckpointError

__all__ = [
    'CheckpointError',
    'TRAINING_ALLOWLIST',
    'checkpoint_sha256',
    'file_sha256',
    'is_url',
    'load_file',
    'local_checkpoint',
    'resolve_url',
]


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 16 MiB blocks (checkpoints are GBs): what identifies weights."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def is_url(src: str | os.PathLike) -> bool:
    return isinstance(src, str) and urlparse(src).scheme in ('http', 'https')


def local_checkpoint(src: str | os.PathLike, key: str | None = None) -> Path:
    """The local file of a checkpoint source: a path, or an https URL fetched into torch.hub's cache.

    Raises:
        CheckpointError: the file does not exist (``key``, the config key that named it, is named too) or
            the download failed.
    """
    path = resolve_url(src) if is_url(src) else Path(src)
    if not path.is_file():
        raise CheckpointError(f'{src}: checkpoint file not found' + (f' ({key})' if key else ''))
    return path


def checkpoint_sha256(src: str | os.PathLike, key: str | None = None) -> str:
    """What identifies a checkpoint's weights: the sha256 of its file (:func:`local_checkpoint`)."""
    return file_sha256(local_checkpoint(src, key))


# Globals allowed for training checkpoints, by "module.qualname". Resolved lazily: numpy and mmengine are
# optional dependencies of the plain-PyTorch package.
TRAINING_ALLOWLIST: tuple[str, ...] = (
    'argparse.Namespace',  # official MAE checkpoint-N.pth: 'args'
    'collections.OrderedDict',
    'collections.defaultdict',
    'builtins.set',
    'builtins.frozenset',
    'builtins.slice',
    'builtins.complex',
    'numpy.ndarray',
    'numpy.dtype',
    'numpy.core.multiarray._reconstruct',
    'numpy.core.multiarray.scalar',
    'numpy._core.multiarray._reconstruct',
    'numpy._core.multiarray.scalar',
    'mmengine.logging.history_buffer.HistoryBuffer',
    'torch.torch_version.TorchVersion',
)
# numpy >= 1.25 pickles dtypes as numpy.dtypes.<Kind>DType classes; allow those by pattern.
_NUMPY_DTYPE_CLASS = re.compile(r'^numpy\.dtypes\.[A-Za-z0-9]+DType$')
# getattr(cls, name) is allowed only on these classes (HistoryBuffer's statistics methods).
_GETATTR_CLASSES = ('mmengine.logging.history_buffer.HistoryBuffer',)


def _import_global(module: str, name: str) -> Any:
    mod = __import__(module, fromlist=[name.split('.')[0]])
    obj = mod
    for part in name.split('.'):
        obj = getattr(obj, part)
    return obj


def _torch_weights_only_globals() -> dict[str, Any]:
    """The globals torch itself accepts with weights_only=True (tensor rebuild functions, dtypes, ...)."""
    from torch import _weights_only_unpickler as wou

    allowed = dict(wou._get_allowed_globals())
    allowed.update(wou._get_user_allowed_globals())
    return allowed


class _Refused(pickle.UnpicklingError):
    def __init__(self, qualname: str) -> None:
        super().__init__(qualname)
        self.qualname = qualname


def _guarded_getattr(obj: Any, name: str) -> Any:
    qual = f'{getattr(obj, "__module__", "?")}.{getattr(obj, "__qualname__", "?")}'
    if not isinstance(obj, type) or qual not in _GETATTR_CLASSES or name.startswith('_'):
        raise _Refused(f'builtins.getattr({qual}, {name!r})')
    return getattr(obj, name)


class _AllowListUnpickler(pickle.Unpickler):
    """Resolves only torch's weights-only globals plus :data:`TRAINING_ALLOWLIST`."""

    _torch_allowed: dict[str, Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles (torch.save's default) use Python 2 names: map them as pickle itself does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        qual = f'{module}.{name}'
        if qual == 'builtins.getattr':
            return _guarded_getattr
        if _AllowListUnpickler._torch_allowed is None:
            _AllowListUnpickler._torch_allowed = _torch_weights_only_globals()
        if qual in _AllowListUnpickler._torch_allowed:
            return _AllowListUnpickler._torch_allowed[qual]
        if qual in TRAINING_ALLOWLIST or _NUMPY_DTYPE_CLASS.match(qual):
            return _import_global(module, name)
        if module == 'torch' and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise _Refused(qual)


class _AllowListPickleModule:
    """A ``pickle_module`` for ``torch.load`` whose unpickler enforces the allow-list."""

    Unpickler = _AllowListUnpickler
    UnpicklingError = pickle.UnpicklingError
    __name__ = 'mae_dense_allowlist_pickle'

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _AllowListUnpickler(file, **kwargs).load()


def _refusal(where: str, qualname: str) -> CheckpointError:
    return CheckpointError(
        f'{where}: refused to unpickle the global {qualname!r} (it could run code); load the file in an '
        'environment you trust and re-save its tensors only, e.g. '
        "torch.save({'state_dict': model.state_dict()}, 'clean.pth')"
    )


_GLOBAL_IN_MSG = re.compile(r'(?:GLOBAL|global) ([\w.]+)')


def _torch_load(f: Any, where: str, map_location: Any) -> Any:
    """weights_only=True first; the allow-list unpickler for training state; refuse everything else."""
    seekable = f if hasattr(f, 'seek') else None
    try:
        return torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first_error = exc
    if seekable is not None:
        seekable.seek(0)
    try:
        # weights_only must be False for torch to accept a pickle_module; safety comes from the module,
        # whose unpickler resolves nothing outside the allow-list.
        return torch.load(
            f, map_location=map_location, weights_only=False, pickle_module=_AllowListPickleModule
        )
    except _Refused as exc:
        raise _refusal(where, exc.qualname) from None
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError) as exc:
        found = _GLOBAL_IN_MSG.search(str(first_error))
        if found:  # a real pickle that names a global outside the policy
            raise _refusal(where, found.group(1)) from None
        # random bytes, a truncated download, another format: nothing to do with code
        raise CheckpointError(f'{where}: {_not_a_checkpoint(exc)}') from None


def _not_a_checkpoint(exc: BaseException) -> str:
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f'not a checkpoint ({msg}; a truncated download or another format? download it again)'


def resolve_url(url: str, model_dir: str | os.PathLike | None = None, progress: bool = False) -> Path:
    """Path of ``url`` in torch.hub's checkpoint cache, downloading it when absent."""
    directory = Path(model_dir) if model_dir else Path(torch.hub.get_dir()) / 'checkpoints'
    filename = os.path.basename(urlparse(url).path) or 'download.pth'
    cached = directory / filename
    if cached.is_file():
        return cached
    directory.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(cached), progress=progress)
    except Exception as exc:  # URLError, HTTPError, socket errors: all mean "could not fetch"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f'{url}: download failed ({reason}); no network? put the file at {cached} '
            '(torch.hub cache) or pass a local path'
        ) from None
    return cached


def load_file(src: str | os.PathLike | io.IOBase, map_location: Any = 'cpu') -> Any:
    """Load a checkpoint file (``.pth``/``.pt``/``.bin``/``.safetensors``, a local path or an https URL).

    Args:
        src: path, URL (through torch.hub's cache) or an open binary file.
        map_location: as for ``torch.load``.

    Returns:
        Whatever the file holds (usually a dict).

    Raises:
        CheckpointError: missing file, failed download, or a pickle needing a global outside the policy.
    """
    if isinstance(src, io.IOBase):
        return _torch_load(src, '<file object>', map_location)
    if is_url(str(src)):
        src = resolve_url(str(src))
    path = Path(src)
    if not path.is_file():
        raise CheckpointError(f'{path}: checkpoint file not found')
    if path.suffix == '.safetensors':
        from safetensors.torch import load_file as load_safetensors

        device = map_location if isinstance(map_location, str) else 'cpu'
        try:
            return load_safetensors(str(path), device=device)
        except Exception as exc:
            raise CheckpointError(f'{path}: not a readable safetensors file ({exc})') from None
    if path.suffix == '.pkl':  # detectron2 model-zoo files: a plain pickle of numpy arrays
        try:
            with path.open('rb') as f:
                return _AllowListUnpickler(f, encoding='latin1').load()
        except _Refused as exc:
            raise _refusal(str(path), exc.qualname) from None
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise CheckpointError(f'{path}: not a readable pickle ({exc})') from None
    try:
        with path.open('rb') as f:
            return _torch_load(f, str(path), map_location)
    except CheckpointError:
        raise
    except (RuntimeError, EOFError, OSError):
        with path.open('rb') as f:
            zipped = f.read(4) == b'PK\x03\x04'
        if zipped and not zipfile.is_zipfile(path):
            exc = EOFError('a zip archive without its directory at the end: cut short')
        raise CheckpointError(f'{path}: {_not_a_checkpoint(exc)}') from None
