"""A test-only mmengine hook that SIGKILLs its own process: before an iteration, or in the middle of a save.

The crash tests import it into training runs through ``custom_imports`` (this directory is put on
PYTHONPATH). It fires once: it creates its marker file just before the kill and does nothing while the
marker exists, so relaunching the very same command runs through.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

SAVE_STAGES = ('write', 'rename', 'publish')


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module(force=True)
class SigkillForTests(Hook):
    """Kill this process with SIGKILL, once.

    Args:
        marker: created just before the kill; while it exists the hook does nothing.
        at_iter: without ``during_save``, die before iteration ``at_iter`` (1-based) starts; with it, die
            during the first checkpoint save of iteration ``at_iter`` or later.
        during_save: ``'write'``: the temporary checkpoint file is cut to ``fraction`` of its bytes, as if
            killed while writing; ``'rename'``: the new checkpoint is in place, ``last_checkpoint`` not
            yet updated; ``'publish'``: ``last_checkpoint`` updated, the retired checkpoint not yet deleted.
        rank: the process that dies (torchrun then stops the others).
        fraction: the part of the temporary file left by ``'write'``.
    """

    priority = 'HIGHEST'

    def __init__(
        self, marker: str, at_iter: int, during_save: str | None = None, rank: int = 0, fraction: float = 0.5
    ) -> None:
        if during_save not in (None, *SAVE_STAGES):
            raise ValueError(f'during_save={during_save!r}: expected one of {SAVE_STAGES} or None')
        self.marker = Path(marker)
        self.at_iter = at_iter
        self.during_save = during_save
        self.rank = rank
        self.fraction = fraction

    def _fire(self) -> bool:
        if get_rank() != self.rank or self.marker.exists():
            return False
        self.marker.touch()
        return True

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self.during_save is None and runner.iter + 1 == self.at_iter and self._fire():
            _die()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.during_save and checkpoint['meta']['iter'] >= self.at_iter and self._fire():
            self._die_in_save()

    def _die_in_save(self) -> None:
        # The process is about to die: patching os for the rest of its life is harmless.
        if self.during_save == 'write':
            real_fsync = os.fsync

            def cut_and_die(fd: int) -> None:  # the first fsync is the temporary checkpoint file's
                os.ftruncate(fd, int(os.fstat(fd).st_size * self.fraction))
                real_fsync(fd)
                _die()

            os.fsync = cut_and_die
            return
        real_replace = os.replace
        renames = [1 if self.during_save == 'rename' else 2]  # checkpoint, then last_checkpoint

        def replace_and_maybe_die(src, dst) -> None:
            real_replace(src, dst)
            renames[0] -= 1
            if renames[0] == 0:
                _die()

        os.replace = replace_and_maybe_die
