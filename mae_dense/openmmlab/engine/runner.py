"""The Runner the tools use: mmengine's, with data loaders and schedules fitted to the machine and the run.

Small-machine overrides such as ``--cfg-options train_dataloader.num_workers=0`` on a config written for
8 GPUs must work rather than fail inside torch's DataLoader or mmengine's scheduler. Every loader (train,
val, test, and the training loader rebuilt on resume) is built through
:meth:`MAEDenseRunner.build_dataloader`, every schedule through :meth:`MAEDenseRunner.build_param_scheduler`;
each change is logged in one line:

* ``persistent_workers=True`` or ``prefetch_factor`` with ``num_workers=0``: dropped (they only mean
  something for worker processes, and the DataLoader refuses them without);
* ``pin_memory=True`` without an accelerator: off (there is no device memory to pin for);
* a finite training sampler with ``drop_last=True`` and fewer samples per process than the batch, which
  would give zero iterations per epoch: the batch becomes the samples there are (the MAE lr follows it);
* a scheduler that begins at or after the end of training (e.g. the cosine phase after a 40-epoch
  warm-up in a 1-epoch run): it would never act, so it is left out (mmengine refuses ``begin >= end``).

One override cannot be fitted: ``train_dataloader.batch_size=1`` on a model whose BatchNorm then sees one
value per channel (UperNet's 1x1 pyramid pooling; mmseg's reference fails the same way). The run stops
at the first such layer with one line that names it and the key (:func:`refuse_single_value_batchnorm`),
not with torch's traceback.

What the project changes in mmengine is installed here, when a run starts, and never by an import: a
config opts in by naming this Runner (``runner_type='MAEDenseRunner'``, as the shipped configs do; the
tools build it for any config). Building it installs the project's checkpoint-loading policy
(``load_checkpoint``, ``load_from``, resume: :mod:`.loading`) and atomic writes for local files
(:mod:`.checkpointing`); on a machine without CUDA it applies the CPU fallbacks (:mod:`.fallbacks`): to
the config in :meth:`MAEDenseRunner.from_cfg` (``AmpOptimWrapper``), to the built model in
:meth:`MAEDenseRunner.build_model` (SyncBatchNorm).
"""

from __future__ import annotations

import copy
import functools
import logging
import warnings
from typing import Any

import torch
from mmengine.dataset import InfiniteSampler
from mmengine.dist import get_world_size
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import RUNNERS
from mmengine.runner import Runner
from mmengine.runner.base_loop import BaseLoop
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader

from ...errors import ConfigError
from .checkpointing import install_atomic_checkpoints
from .fallbacks import cpu_fallback_cfg, cpu_fallback_model
from .loading import install_loading_policy

__all__ = ['MAEDenseRunner', 'fit_loader_cfg', 'refuse_single_value_batchnorm', 'unwrap_model']


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP (or other mmengine) wrapper, or the model itself."""
    return model.module if is_model_wrapper(model) else model


def fit_loader_cfg(cfg: dict, accelerator: bool) -> tuple[dict, list[str]]:
    """``cfg`` with the options this machine cannot take removed, and one message per change.

    Args:
        cfg: a ``*_dataloader`` config (not modified).
        accelerator: whether a device to pin memory for exists.
    """
    cfg = dict(cfg)
    changes = []
    if not cfg.get('num_workers'):
        if cfg.get('persistent_workers'):
            cfg['persistent_workers'] = False
            changes.append('persistent_workers=True needs worker processes (num_workers=0): set to False')
        if cfg.get('prefetch_factor') is not None:
            changes.append(f'prefetch_factor={cfg.pop("prefetch_factor")} needs worker processes: dropped')
    if cfg.get('pin_memory') and not accelerator:
        cfg['pin_memory'] = False
        changes.append('pin_memory=True without an accelerator: set to False')
    return cfg, changes


def _check_batchnorm_input(name: str, module: _BatchNorm, args: tuple) -> None:
    x = args[0]
    if module.training and x.dim() >= 2 and x.numel() == x.shape[1]:
        raise ConfigError(
            f'train_dataloader.batch_size={x.shape[0]}: {name} ({type(module).__name__}) gets one value per '
            f'channel in training (input {tuple(x.shape)}); it needs at least 2 images per process: '
            'set train_dataloader.batch_size=2 or more'
        )


def refuse_single_value_batchnorm(model: torch.nn.Module) -> None:
    """Make each BatchNorm of ``model`` that normalises per process stop with one line on one value per
    channel. (A SyncBatchNorm across processes pools their batches: left alone.)
    """
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm) and not (
            isinstance(module, torch.nn.SyncBatchNorm) and get_world_size() > 1
        ):
            module.register_forward_pre_hook(functools.partial(_check_batchnorm_input, name))


@RUNNERS.register_module(force=True)
class MAEDenseRunner(Runner):
    """mmengine's ``Runner`` (same arguments and ``from_cfg``) whose loaders and schedules fit the run.

    Building it installs the loading policy and atomic local writes into mmengine (idempotent, for the
    rest of the process) and applies the CPU fallbacks (:meth:`from_cfg`, :meth:`build_model`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        install_loading_policy()
        install_atomic_checkpoints()
        warnings.filterwarnings('ignore', message='.*torch.cuda.amp.*')  # mmengine's AMP on torch 2.x
        super().__init__(*args, **kwargs)

    @classmethod
    def from_cfg(cls, cfg: Any) -> Runner:
        """``Runner.from_cfg`` on a copy of ``cfg`` with the CPU fallbacks this machine needs (one line each)."""
        return super().from_cfg(cpu_fallback_cfg(copy.deepcopy(cfg)))  # the caller's cfg unchanged

    def build_model(self, model: torch.nn.Module | dict) -> torch.nn.Module:
        """``Runner.build_model``; without CUDA, SyncBatchNorm layers become BatchNorm2d (one line), before DDP."""
        return cpu_fallback_model(super().build_model(model))

    def _say_once(self, msg: str) -> None:
        said = self.__dict__.setdefault('_said', set())
        if msg not in said:
            said.add(msg)
            print_log(msg, logger='current', level=logging.WARNING)

    def _loader_name(self, cfg: dict) -> str:
        for split in ('train', 'val', 'test'):
            if cfg is getattr(self, f'_{split}_dataloader', None):
                return f'{split}_dataloader'
        # the training loader rebuilt on resume: its dataset is the built loop's
        loop = self.__dict__.get('_train_loop')
        if isinstance(loop, BaseLoop) and cfg.get('dataset') is loop.dataloader.dataset:
            return 'train_dataloader'
        return 'dataloader'

    def build_dataloader(  # an instance method: the loops call runner.build_dataloader(...)
        self, dataloader: DataLoader | dict, seed: int | None = None, diff_rank_seed: bool = False
    ) -> DataLoader:
        """``Runner.build_dataloader`` after :func:`fit_loader_cfg`; the batch clamped to a tiny data set."""
        if not isinstance(dataloader, dict):
            return Runner.build_dataloader(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)
        name = self._loader_name(dataloader)
        cfg, changes = fit_loader_cfg(dataloader, torch.accelerator.is_available())
        for change in changes:
            self._say_once(f'{name}: {change}')
        loader = Runner.build_dataloader(cfg, seed=seed, diff_rank_seed=diff_rank_seed)  # (it copies cfg)
        sampler = getattr(loader.batch_sampler, 'sampler', loader.sampler)
        if (
            not cfg.get('drop_last')
            or isinstance(sampler, InfiniteSampler)
            or len(loader)
            or not len(sampler)
        ):
            return loader
        samples = len(sampler)  # this process's share of the data set
        self._say_once(
            f'{name}: batch_size={cfg.get("batch_size")} with drop_last=True gives no iteration on {samples} '
            f'samples per process ({get_world_size()} process(es)): batch_size set to {samples}'
        )
        cfg = dict(cfg, batch_size=samples, dataset=loader.dataset)  # the built data set, not a new one
        return Runner.build_dataloader(cfg, seed=seed, diff_rank_seed=diff_rank_seed)

    def build_train_loop(self, loop: BaseLoop | dict) -> BaseLoop:
        """``Runner.build_train_loop``; with one image per process, BatchNorm layers are watched (see above)."""
        loop = super().build_train_loop(loop)
        if getattr(loop.dataloader, 'batch_size', None) == 1:
            refuse_single_value_batchnorm(unwrap_model(self.model))
        return loop

    def build_param_scheduler(self, scheduler: Any) -> Any:
        """``Runner.build_param_scheduler`` without the schedulers that begin after training ends."""
        loop = self.__dict__.get('_train_loop')
        if isinstance(scheduler, dict) and 'type' in scheduler:  # one scheduler (not one list per optimizer)
            scheduler = [scheduler]
        if isinstance(loop, BaseLoop) and isinstance(scheduler, list):
            kept = []
            for entry in scheduler:
                if isinstance(entry, dict):
                    by_epoch = entry.get('by_epoch', True)
                    end, unit = (loop.max_epochs, 'epoch') if by_epoch else (loop.max_iters, 'iteration')
                    if entry.get('begin', 0) >= end:
                        self._say_once(
                            f'param_scheduler {entry.get("type")} begins at {unit} {entry.get("begin")}, '
                            f'after the last {unit} of this run ({end}): left out'
                        )
                        continue
                kept.append(entry)
            scheduler = kept
        return super().build_param_scheduler(scheduler)
