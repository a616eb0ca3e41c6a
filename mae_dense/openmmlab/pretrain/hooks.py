"""MAE pretraining's hook: the strict loading check, and the reports of skipped images and steps."""

from __future__ import annotations

import logging

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from ...checkpoint import fit_full_mae
from ...models.mae import MaskedAutoencoder
from ..engine.runner import unwrap_model


@HOOKS.register_module(force=True)
class MAEPretrainHook(Hook):
    """Pretraining bookkeeping.

    * Loading (``load_from`` and resume): the checkpoint must fit the MAE exactly (encoder AND decoder,
      this project's layout or the official ``models_mae.py`` one, e.g. ``checkpoint-799.pth``); anything
      else is a one-line :class:`CheckpointError` instead of mmengine's silent non-strict load.
    * After each epoch: the number of unreadable images skipped (all processes, all loader workers).
    * After training: the non-finite losses and skipped steps, if any.
    """

    priority = 'NORMAL'

    def __init__(self) -> None:
        self._reported_skipped = 0

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = unwrap_model(runner.model)
        if not isinstance(model, MaskedAutoencoder):
            return
        # official files are converted to this class's names (a misfit is one CheckpointError line)
        where = getattr(runner, '_load_from', None) or 'the loaded checkpoint'
        checkpoint['state_dict'] = fit_full_mae(model, checkpoint, where)

    def after_train_epoch(self, runner) -> None:
        preprocessor = getattr(unwrap_model(runner.model), 'data_preprocessor', None)
        count = torch.tensor([getattr(preprocessor, 'skipped_images', 0)], dtype=torch.int64)
        if get_world_size() > 1:
            all_reduce(count, op='sum')
        total = int(count.item())
        if total > self._reported_skipped:
            print_log(
                f'epoch {runner.epoch + 1}: {total - self._reported_skipped} unreadable images skipped '
                f'({total} in this run; each replaced by the next readable image, files named above)',
                logger='current',
                level=logging.WARNING,
            )
            self._reported_skipped = total

    def after_train(self, runner) -> None:
        wrapper = runner.optim_wrapper
        losses = getattr(wrapper, 'nonfinite_losses', 0)
        if losses:
            print_log(
                f'{losses} non-finite losses, {wrapper.skipped_steps} optimizer steps skipped',
                logger='current',
                level=logging.WARNING,
            )
