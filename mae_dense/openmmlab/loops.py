"""Exact resume: RNG states in checkpoints, and training loops that continue where the checkpoint was written.

mmengine's loops resume by position only. ``IterBasedTrainLoop`` advances its loader by calling ``next()``
once per trained iteration: the whole data pipeline runs again (hours for a 160k-iteration run), and its
random crops and flips consume the RNG states that were just restored, so the resumed run draws other
augmentations and masks than the interrupted one. ``EpochBasedTrainLoop`` restarts a half-done epoch from
its first batch. When the config sets no seed, mmengine also re-seeds the runner from the checkpoint only
after the loader's sampler was built with a fresh one, so the data order changes.

The loops here (registered on import; the configs use them) resume exactly:

* the batch sampler is *replayed* (indices only, no image is read) up to the checkpoint's iteration, and
  data are loaded from there on (a loader over the remaining batches, same dataset, workers and collate);
* the sampler is rebuilt with the seed the interrupted run used (kept in the message hub, so in every
  checkpoint);
* building those iterators draws from torch's RNG (each DataLoader iterator takes a base seed): it happens
  inside :func:`rng_preserved`, so training continues from exactly the states :class:`RandomStateHook`
  restored;
* validation runs inside :func:`rng_preserved` too: a checkpoint written just before validation then
  holds the states the next iteration starts from, with or without that validation in between.

With ``num_workers=0`` everything a run draws comes from the restored states, and a resumed run equals an
uninterrupted one. With loader workers the data order and the model's own draws (masks, drop path,
sampling of RoIs) still continue exactly, but each worker re-seeds itself when it starts (mmengine's
``worker_init_fn``), so the augmentations after a resume are fresh draws rather than the interrupted run's.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS, LOOPS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from mmengine.runner.loops import _InfiniteDataloaderIterator
from torch.utils.data import DataLoader

__all__ = [
    'ExactResumeEpochBasedTrainLoop',
    'ExactResumeIterBasedTrainLoop',
    'RandomStateHook',
    'capture_rng_state',
    'restore_rng_state',
    'rng_preserved',
]

_SAMPLER_SEED = 'train_sampler_seed'  # message-hub key: the seed of the run's training sampler


# ============================================================================================ RNG states
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


# ============================================================================================== positions
def _sampler(loader: DataLoader) -> Any:
    """The sampler that carries the seed and epoch (mmengine's, under the batch sampler when there is one)."""
    inner = getattr(loader.batch_sampler, 'sampler', None)
    return inner if hasattr(inner, 'set_epoch') or hasattr(inner, 'seed') else loader.sampler


def _set_epoch(loader: DataLoader, epoch: int) -> None:
    """As mmengine's ``_InfiniteDataloaderIterator`` does at the end of a finite sampler's pass."""
    if hasattr(loader.sampler, 'set_epoch'):
        loader.sampler.set_epoch(epoch)
    elif hasattr(getattr(loader.batch_sampler, 'sampler', None), 'set_epoch'):
        loader.batch_sampler.sampler.set_epoch(epoch)


class _RemainingBatches:
    """A batch sampler over what is left of an already started pass of another batch sampler (one pass)."""

    def __init__(self, batches: Iterator[list[int]], length: int) -> None:
        self._batches = batches
        self._length = max(length, 0)

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches

    def __len__(self) -> int:
        return self._length


def loader_over(loader: DataLoader, batches: Iterator[list[int]], length: int) -> DataLoader:
    """A loader for the remaining ``batches`` (index lists) with ``loader``'s dataset, workers and collate."""
    return DataLoader(
        loader.dataset,
        batch_sampler=_RemainingBatches(batches, length),
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor if loader.num_workers else None,
        persistent_workers=False,  # one pass
        pin_memory_device=loader.pin_memory_device,
        in_order=loader.in_order,
    )


class _ResumedInfiniteIterator(_InfiniteDataloaderIterator):
    """mmengine's infinite loader iterator, started after ``start`` batches without loading them.

    The batch sampler is replayed as the interrupted run consumed it (a finite sampler's passes end and
    restart with the next epoch, exactly as in the parent's ``__next__``); the data come from a loader over
    the remaining batches of the current pass, then from ``dataloader`` itself for the following passes.
    """

    def __init__(self, dataloader: DataLoader, start: int) -> None:
        self._dataloader = dataloader
        self._epoch = 0
        batches = iter(dataloader.batch_sampler)
        for _ in range(start):
            try:
                next(batches)
            except StopIteration:
                self._epoch += 1
                _set_epoch(dataloader, self._epoch)
                batches = iter(dataloader.batch_sampler)
                next(batches)
        self._iterator = iter(loader_over(dataloader, batches, len(dataloader)))


class _ExactResume:
    """What both loops share: the loader rebuilt with the interrupted run's sampler seed, RNG-neutral
    validation. Mixed into mmengine's loops (``self.dataloader``, ``self.runner``, ``self._iter``)."""

    def _keep_loader_cfg(self, dataloader: Any) -> None:
        self._loader_cfg = dataloader if isinstance(dataloader, dict) else None

    def _sampler_seed(self) -> int | None:
        return getattr(_sampler(self.dataloader), 'seed', None)

    def _rebuild_loader_for_resume(self) -> None:
        """On resume: a fresh loader (nothing prefetched, sampler state new) seeded as the interrupted run.

        On a fresh start the sampler's seed goes into the message hub, so every checkpoint carries it.
        Building the loader draws nothing from the RNG states the resumed run continues from.
        """
        hub = self.runner.message_hub
        if self._iter == 0:
            hub.update_info(_SAMPLER_SEED, self._sampler_seed())
            return
        if self._loader_cfg is None:  # a loader object was given: it cannot be rebuilt
            return
        seed = hub.get_info(_SAMPLER_SEED, self._sampler_seed())
        cfg = dict(self._loader_cfg, dataset=self.dataloader.dataset)  # the built dataset, not a new one
        if seed is not None and isinstance(cfg.get('sampler'), dict):
            cfg['sampler'] = dict(cfg['sampler'], seed=seed)
        diff_rank_seed = self.runner._randomness_cfg.get('diff_rank_seed', False)
        with rng_preserved():
            self.dataloader = self.runner.build_dataloader(
                cfg, seed=self.runner.seed, diff_rank_seed=diff_rank_seed
            )

    def _validate_if_due(self, progress: int, end: int) -> None:
        """mmengine's validation condition (``progress``: iterations or epochs done), run RNG-neutral."""
        due = progress % self.val_interval == 0 or progress == end
        if self.runner.val_loop is not None and progress >= self.val_begin and due:
            with rng_preserved():
                self.runner.val_loop.run()


@LOOPS.register_module(force=True)
class ExactResumeIterBasedTrainLoop(_ExactResume, IterBasedTrainLoop):
    """mmengine's ``IterBasedTrainLoop`` (same arguments) that resumes exactly (see the module docstring)."""

    def __init__(self, runner, dataloader: DataLoader | dict, max_iters: int, **kwargs: Any) -> None:
        self._keep_loader_cfg(dataloader)
        super().__init__(runner, dataloader, max_iters, **kwargs)

    def run(self) -> torch.nn.Module:
        """mmengine's ``run`` with the loader positioned by replay instead of ``next()`` N times."""
        self.runner.call_hook('before_train')
        self._rebuild_loader_for_resume()
        self.runner.call_hook('before_train_epoch')  # the whole run is one big epoch, as in mmengine
        if 0 < self._iter < self._max_iters:
            with rng_preserved():
                self.dataloader_iterator = _ResumedInfiniteIterator(self.dataloader, self._iter)
            print_log(
                f'resume: data continue at batch {self._iter + 1} (sampler replayed, no batch loaded)',
                logger='current',
            )
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            data_batch = next(self.dataloader_iterator)
            self.run_iter(data_batch)
            self._decide_current_val_interval()
            self._validate_if_due(self._iter, self._max_iters)
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model


@LOOPS.register_module(force=True)
class ExactResumeEpochBasedTrainLoop(_ExactResume, EpochBasedTrainLoop):
    """mmengine's ``EpochBasedTrainLoop`` (same arguments) that resumes exactly, mid-epoch included.

    A checkpoint written every N iterations (``CheckpointHook(by_epoch=False)``) can fall inside an epoch:
    the resumed epoch continues at the next batch, with ``batch_idx`` counting on from there.
    """

    def __init__(self, runner, dataloader: DataLoader | dict, max_epochs: int, **kwargs: Any) -> None:
        self._keep_loader_cfg(dataloader)
        self._resumed_mid_run = False
        super().__init__(runner, dataloader, max_epochs, **kwargs)

    def run(self) -> torch.nn.Module:
        """mmengine's ``run`` with the loader rebuilt on resume and validation RNG-neutral."""
        self.runner.call_hook('before_train')
        self._rebuild_loader_for_resume()
        self._resumed_mid_run = self._iter > 0
        while self._epoch < self._max_epochs and not self.stop_training:
            self.run_epoch()
            self._decide_current_val_interval()
            self._validate_if_due(self._epoch, self._max_epochs)
        self.runner.call_hook('after_train')
        return self.runner.model

    def run_epoch(self) -> None:
        """Iterate one epoch, or the rest of one that a checkpoint interrupted."""
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        batches = self.dataloader
        length = len(self.dataloader)
        done = 0
        if self._resumed_mid_run:  # the first epoch after a resume
            self._resumed_mid_run = False
            done = self._iter - self._epoch * length  # batches of this epoch trained before the checkpoint
        if 0 < done <= length:
            with rng_preserved():
                replay = iter(self.dataloader.batch_sampler)
                for _ in range(done):
                    next(replay)
                batches = iter(loader_over(self.dataloader, replay, length - done))
            print_log(
                f'resume: epoch {self._epoch + 1} continues at batch {done + 1} of {length} '
                '(sampler replayed, no batch loaded)',
                logger='current',
            )
        elif done:
            print_log(
                f'resume: iteration {self._iter} does not fall in epoch {self._epoch + 1} of {length} '
                'iterations (batch size or data changed?): the epoch starts from its first batch',
                logger='current',
                level=logging.WARNING,
            )
            done = 0
        for idx, data_batch in enumerate(batches, start=done):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1


@LOOPS.register_module(force=True)
class MAEPretrainLoop(ExactResumeEpochBasedTrainLoop):
    """The exact-resume epoch loop that gives ``MAEPretrainOptimWrapperConstructor`` the real batch size.

    The Runner builds the loop (and its loader) just before the optimizer, so the constructor sees the
    per-process batch actually used, including any ``--cfg-options train_dataloader.batch_size=...``.
    """

    def __init__(self, runner, dataloader, max_epochs: int, **kwargs: Any) -> None:
        super().__init__(runner, dataloader, max_epochs, **kwargs)
        cfg = runner.optim_wrapper
        if isinstance(cfg, dict) and cfg.get('constructor') == 'MAEPretrainOptimWrapperConstructor':
            loader = self.dataloader
            batch_size = loader.batch_size or getattr(loader.batch_sampler, 'batch_size', None)
            paramwise = dict(cfg.get('paramwise_cfg') or {})
            paramwise['batch_size'] = batch_size
            cfg['paramwise_cfg'] = paramwise
