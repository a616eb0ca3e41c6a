"""RNG states in checkpoints: every process's python, numpy, torch and CUDA generators saved and restored.

Half of exact resume (the other half is :mod:`.loops`, which replays the data order): with the states a
checkpoint holds, a resumed run draws the same crops, flips, masks and drop-path as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

__all__ = ['RandomStateHook', 'capture_rng_state', 'restore_rng_state', 'rng_preserved']


def capture_rng_state() -> dict:
    """This process's RNG states: python ``random``, numpy, torch CPU and (if used) the current CUDA device."""
    state = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state` (tensors may come back on the GPU through ``map_location``)."""
    random.setstate(tuple(state['python']))
    np.random.set_state(tuple(state['numpy']))
    torch.set_rng_state(torch.as_tensor(state['torch']).cpu())
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.as_tensor(state['cuda']).cpu())


@contextlib.contextmanager
def rng_preserved() -> Iterator[None]:
    """Run the body without changing this process's RNG states (what it draws is put back)."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


@HOOKS.register_module(force=True)
class RandomStateHook(Hook):
    """Save every process's RNG states in the checkpoint; restore them on resume.

    With them a resumed run draws the same crops, flips and masks as an uninterrupted one (exactly so
    with ``num_workers=0``; loader workers reseed themselves from mmengine's worker seed). Checkpoints
    hold a list indexed by rank (gathered on all processes just before rank 0 saves); a run resumed on
    a different number of processes keeps its fresh seeds and says so. ``load_from`` (weights only)
    restores nothing.
    """

    priority = 'LOW'  # after the iteration's work, before CheckpointHook (VERY_LOW) saves

    def __init__(self) -> None:
        self._gathered: tuple[int, list[dict]] | None = None
        self._loaded: list[dict] | None = None

    @staticmethod
    def _checkpoint_due(runner, by_epoch: bool) -> bool:
        """Whether a CheckpointHook saves at this point (its own conditions)."""
        for hook in runner.hooks:
            if not isinstance(hook, CheckpointHook) or hook.by_epoch != by_epoch:
                continue
            if by_epoch:
                due = hook.every_n_epochs(runner, hook.interval, hook.save_begin)
                due = due or (hook.save_last and hook.is_last_train_epoch(runner))
            else:
                due = hook.every_n_train_iters(runner, hook.interval, hook.save_begin)
                due = due or (hook.save_last and hook.is_last_train_iter(runner))
            if due:
                return True
        return False

    def _gather_if_due(self, runner, by_epoch: bool) -> None:
        # collective: every rank evaluates the same condition, so all of them take part
        if get_world_size() > 1 and self._checkpoint_due(runner, by_epoch):
            self._gathered = (runner.iter, all_gather_object(capture_rng_state()))

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._gather_if_due(runner, by_epoch=False)

    def after_train_epoch(self, runner) -> None:
        self._gather_if_due(runner, by_epoch=True)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._gathered is not None and self._gathered[0] == runner.iter:
            states = self._gathered[1]
        else:
            states = [capture_rng_state()]  # one process (or an unforeseen save: rank 0's only)
        self._gathered = None
        checkpoint['rng_states'] = states

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded = checkpoint.get('rng_states')

    def before_train(self, runner) -> None:
        states, self._loaded = self._loaded, None
        if runner.iter == 0 and runner.epoch == 0:  # nothing loaded, or load_from: weights only
            return
        world, rank = get_world_size(), get_rank()
        if not states:
            print_log(
                'resumed checkpoint has no RNG states: crops, flips and masks continue from fresh seeds',
                logger='current',
                level=logging.WARNING,
            )
        elif len(states) != world:
            print_log(
                f'resumed checkpoint has the RNG states of {len(states)} processes, this run has {world}: '
                'crops, flips and masks continue from fresh seeds',
                logger='current',
                level=logging.WARNING,
            )
        else:
            restore_rng_state(states[rank])
            print_log(f'restored the RNG states of {world} process(es)', logger='current')
