"""Release files of timm's ViT families onto a timm model: timm's own checkpoint filter, then a strict load.

timm converts each family's original release layout with the ``checkpoint_filter_fn`` of the model's own
module (``vision_transformer``: DINOv2's ``register_tokens``/``mask_token`` (``_convert_dinov2``), OpenAI
CLIP's ``visual.*`` and open_clip's ``visual.trunk.*``; ``deit``: DeiT3's ``gamma_1``/``gamma_2``;
``eva``: EVA-02's original keys, ...). The file is read through the project's loading policy (no code runs;
:func:`~mae_dense.checkpoint.safe_load.load_file`), passed through that filter, and loaded strictly: every
tensor of the model must come from the file with its shape; what the file has and the model lacks as a
whole module (a classifier ``head``, a MAP pooling head the dense tasks do not use) is dropped and named in
the one-line report. A big_vision ``.npz`` goes through timm's own npz loader where the model has one.
"""

from __future__ import annotations

import difflib
import inspect
import os
import sys
import zipfile
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from .load import _log_rank0
from .safe_load import load_file, local_checkpoint

__all__ = ['check_timm_name', 'load_timm_checkpoint', 'refuse_torchscript', 'timm_filter']


def check_timm_name(name: str, where: str = 'timm') -> None:
    """Refuse a name timm does not build, with one line naming the closest names timm has."""
    import timm

    if isinstance(name, str) and timm.is_model(name):
        return
    close = difflib.get_close_matches(str(name), timm.list_models(), n=3, cutoff=0.6)
    hint = f'; closest: {", ".join(close)}' if close else ' (timm.list_models() lists them)'
    raise ConfigError(f'{where}: {name!r} is not a timm model name{hint}')


def refuse_torchscript(path: str | os.PathLike) -> None:
    """A TorchScript archive (OpenAI CLIP's ``ViT-B-16.pt``) holds code, not a state dict: refuse it."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any(n.endswith('/constants.pkl') or '/code/' in n for n in names):
        raise CheckpointError(
            f'{path}: a TorchScript archive (OpenAI CLIP release?), not a state dict; load it with open_clip '
            '(open_clip.create_model_and_transforms(NAME, pretrained=FILE)) and save its state dict: '
            "torch.save(model.state_dict(), 'clip_state_dict.pth')"
        )


def timm_filter(model_name: str) -> Callable[[dict, nn.Module], dict] | None:
    """The ``checkpoint_filter_fn`` of the module that defines ``model_name`` (None: timm names as is).

    Layer scale is adapted (``gamma_1`` -> ``ls1.gamma``) wherever the filter offers it, as timm's DeiT3
    entry points ask: a timm-named file has no ``gamma_`` keys, so nothing else changes.
    """
    from timm.models import model_entrypoint

    module = sys.modules[model_entrypoint(model_name).__module__]
    fn = getattr(module, 'checkpoint_filter_fn', None)
    if fn is None:
        return None
    if 'adapt_layer_scale' in inspect.signature(fn).parameters:
        return partial(fn, adapt_layer_scale=True)
    return fn


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _load_npz(model: nn.Module, model_name: str, path: Path) -> str:
    if not hasattr(model, 'load_pretrained'):
        raise CheckpointError(
            f'{path}: timm {model_name} has no .npz loader; give a state-dict file (.pth, .bin, .safetensors)'
        )
    try:
        model.load_pretrained(str(path))
    except (KeyError, ValueError, RuntimeError, IndexError) as exc:
        raise CheckpointError(
            f'{path}: does not fit timm {model_name} as a big_vision .npz: {_first_line(exc)}'
        ) from None
    return f"{path}: big_vision .npz through timm's npz loader into {model_name}"


def _fit_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], model_name: str, where: str):
    """(tensors to load, dropped keys) or one line naming the first key or shape that differs."""
    target = model.state_dict()
    roots = {k.split('.', 1)[0] for k in target}
    dropped = sorted(k for k in sd if k not in target and k.split('.', 1)[0] not in roots)
    unexpected = [k for k in sd if k not in target and k.split('.', 1)[0] in roots]
    missing = [k for k in target if k not in sd]
    counts = f' ({len(missing)} missing, {len(unexpected)} unexpected)'
    if missing:
        raise CheckpointError(f'{where}: does not fit timm {model_name}: missing {missing[0]}{counts}')
    if unexpected:
        raise CheckpointError(f'{where}: does not fit timm {model_name}: unexpected {unexpected[0]}{counts}')
    for k, v in target.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f'{where}: does not fit timm {model_name}: {k} has shape {tuple(sd[k].shape)} in the file '
                f'but {tuple(v.shape)} in the model'
            )
    return {k: sd[k].to(target[k].dtype) for k in target}, dropped


def _group_roots(keys: list[str]) -> str:
    counts: dict[str, int] = {}
    for k in keys:
        counts[k.split('.', 1)[0]] = counts.get(k.split('.', 1)[0], 0) + 1
    return ', '.join(f'{k}.* ({n})' if n > 1 else k for k, n in sorted(counts.items())) or 'nothing'


def _count_tensors(tree: object) -> int:
    if isinstance(tree, torch.Tensor):
        return 1
    return sum(_count_tensors(v) for v in tree.values()) if isinstance(tree, Mapping) else 0


def load_timm_checkpoint(model: nn.Module, model_name: str, src: str | os.PathLike, log: bool = True) -> str:
    """Load a release file (path or URL) into the timm ``model`` built as ``model_name``; the report line.

    Raises:
        CheckpointError: a missing or unreadable file, a TorchScript archive, or a file that does not fit
            (the first missing/unexpected key or differing shape).
    """
    path = local_checkpoint(src)
    refuse_torchscript(path)
    if path.suffix == '.npz':
        line = _load_npz(model, model_name, path)
    else:
        raw = load_file(path)
        if not isinstance(raw, Mapping):
            raise CheckpointError(
                f'{path}: expected a state dict (a mapping of tensors), got {type(raw).__name__}'
            )
        fn = timm_filter(model_name)
        try:
            sd = fn(dict(raw), model) if fn is not None else dict(raw)
        except (KeyError, RuntimeError, ValueError, AttributeError) as exc:
            raise CheckpointError(
                f"{path}: timm's checkpoint filter for {model_name} cannot read it: {_first_line(exc)}"
            ) from None
        sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
        to_load, dropped = _fit_state_dict(model, sd, model_name, str(path))
        model.load_state_dict(to_load, strict=True)
        how = f"timm's {fn.func.__name__ if isinstance(fn, partial) else fn.__name__}" if fn else 'timm names'
        line = (
            f'{path}: timm {model_name} ({how} of {sys.modules[type(model).__module__].__name__}), '
            f'loaded {len(to_load)} tensors strictly (of {_count_tensors(raw)} in the file; the filter keeps '
            f'the image encoder); dropped: {_group_roots(dropped)}'
        )
    if log:
        _log_rank0(line)
    return line
