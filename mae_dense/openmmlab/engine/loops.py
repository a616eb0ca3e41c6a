"""Exact resume: training loops that continue where the checkpoint was written (the RNG states: :mod:`.random_state`).

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

import logging
from collections.abc import Iterator
from typing import Any

import torch
from mmengine.logging import print_log
from mmengine.registry import LOOPS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from mmengine.runner.loops import _InfiniteDataloaderIterator
from torch.utils.data import DataLoader

from .random_state import rng_preserved

__all__ = ['ExactResumeEpochBasedTrainLoop', 'ExactResumeIterBasedTrainLoop']

_SAMPLER_SEED = 'train_sampler_seed'  # message-hub key: the seed of the run's training sampler


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
