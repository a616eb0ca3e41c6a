"""A backbone's weights as a task config takes them, and the identity the results store keys them by.

The identity is the sha256 of the weights file (a URL is fetched into torch.hub's cache first), hashed
once per process while the file is unchanged; a from-scratch backbone is ``random``.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from ..checkpoint import file_sha256, local_checkpoint
from ..errors import PipelineError
from ..models.archs import Arch
from .backbones import BackboneSpec
from .outputs import CellState
from .recipe import RunConfig
from .spec import TaskSpec

__all__ = ['KEEP', 'RANDOM', 'backbone_weights', 'stage_dir']

RANDOM = 'random'  # the checkpoint identity of a from-scratch backbone
KEEP = 'keep'  # the task config's own weights (the single-backbone form without pretrain:)


_hashed: dict[tuple, str] = {}  # a large checkpoint is hashed once per process while it is unchanged
_hashed_lock = threading.Lock()


def _sha256(src: str) -> str:
    """:func:`checkpoint_sha256` of a file or URL (fetched into torch.hub's cache first)."""
    path = str(local_checkpoint(src))
    st = os.stat(path)
    key = (path, st.st_ino, st.st_size, st.st_mtime_ns)
    with _hashed_lock:
        if key in _hashed:
            return _hashed[key]
    sha = file_sha256(path)
    with _hashed_lock:
        _hashed[key] = sha
    return sha


def _dims(arch: Arch) -> str:
    """Every number of a size (two custom sizes of one width differ here): ``1024d-24b-16h-p16``."""
    return f'{arch.embed_dim}d-{arch.depth}b-{arch.num_heads}h-p{arch.patch_size}'


def stage_dir(work_dir: Path, backbone: BackboneSpec, stage: str) -> Path:
    """Where a backbone's stage runs: ``<work_dir>/<backbone>/<stage>`` (``pretrain``, ``ade20k-seed0``)."""
    return work_dir / backbone.name / stage


def backbone_weights(backbone: BackboneSpec, work_dir: Path, task: TaskSpec | None = None) -> tuple[Any, str]:
    """``(value for the task config's weights key, checkpoint identity)`` of a backbone.

    The identity is the sha256 of the weights file (a URL is fetched into torch.hub's cache first),
    ``random`` for a from-scratch backbone (``random 1024d-24b-16h-p16`` for one of another size: the
    config hash is the protocol's and does not see the size; ``random timm NAME {kwargs}`` for a timm
    architecture); :data:`KEEP` leaves the task config's own weights in place.
    """
    if backbone.kind == 'random' and backbone.timm:  # the timm name and options are the architecture
        extra = f' {json.dumps(backbone.timm_kwargs, sort_keys=True)}' if backbone.timm_kwargs else ''
        return None, f'{RANDOM} timm {backbone.timm}{extra}'
    if backbone.kind == 'random':
        return None, RANDOM if backbone.arch is None else f'{RANDOM} {_dims(backbone.arch)}'
    if backbone.kind == 'checkpoint':
        local = str(local_checkpoint(backbone.checkpoint))
        return local, _sha256(local)
    if backbone.kind == 'pretrain':
        state = CellState(stage_dir(work_dir, backbone, 'pretrain'))
        if not state.done:
            raise PipelineError(f'{backbone.name}: its pretraining stage has not finished')
        return state.data['checkpoint'], state.data['checkpoint_sha256']
    src = RunConfig.read(task.config, task.cfg_options).get(task.task.weights_key)
    return KEEP, (_sha256(src) if src else RANDOM)
