"""A progress bar over the test loader, for the test tool (rank 0 only)."""

from __future__ import annotations

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.utils import ProgressBar

__all__ = ['ProgressBarHook']


@HOOKS.register_module(force=True)
class ProgressBarHook(Hook):
    """A progress bar over the test/val loader (rank 0 only)."""

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self._bar: ProgressBar | None = None

    def _start(self, runner, loader) -> None:
        if is_main_process():
            self._bar = ProgressBar(len(loader))

    def _step(self) -> None:
        if self._bar is not None:
            self._bar.update()

    def _end(self) -> None:
        if self._bar is not None:
            self._bar.file.write('\n')
            self._bar = None

    def before_test(self, runner) -> None:
        self._start(runner, runner.test_dataloader)

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._step()

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._end()
