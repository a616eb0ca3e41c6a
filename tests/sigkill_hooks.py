"""A test-only mmengine hook that SIGKILLs its own process: before an iteration, or in the middle of a save.

The crash tests import it into training runs through ``custom_imports`` (this directory is put on
PYTHONPATH). It fires once: it creates its marker file just before the kill and does nothing while the
marker exists, so relaunching the very same command runs through.
"""

from __future__ import annotations

import os
import signal
import time
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
        rank: the process that dies (torchrun then stops the others). With ``during_save='write'`` and a
            rank other than 0, that rank dies *while rank 0 writes*, by construction: rank 0 cuts the
            temporary file, says so in ``<marker>.writing`` and waits; the other rank, which saves nothing,
            waits for that file after the iteration ``at_iter`` (a checkpoint iteration) and dies, and
            torchrun ends rank 0 in the middle of its write.
        fraction: the part of the temporary file left by ``'write'``.
        save_delay: without ``during_save``, rank 0 sleeps this many seconds at the start of each save
            before iteration ``at_iter`` in the run that kills: a rank that could run past a checkpoint not
            yet on disk would then die before it is.
    """

    # After RandomStateHook (LOW), whose RNG gather before a save is a collective every rank must reach,
    # before CheckpointHook (VERY_LOW), whose save ends with a barrier.
    priority = 80

    def __init__(
        self,
        marker: str,
        at_iter: int,
        during_save: str | None = None,
        rank: int = 0,
        fraction: float = 0.5,
        save_delay: float = 0.0,
    ) -> None:
        if during_save not in (None, *SAVE_STAGES):
            raise ValueError(f'during_save={during_save!r}: expected one of {SAVE_STAGES} or None')
        self.marker = Path(marker)
        self.at_iter = at_iter
        self.during_save = during_save
        self.rank = rank
        self.fraction = fraction
        self.save_delay = save_delay if not self.marker.exists() else 0.0  # (the relaunches run at speed)
        self.writing = Path(f'{marker}.writing')
        self.peer = during_save == 'write' and rank != 0  # another rank dies while rank 0 writes

    def _fire(self) -> bool:
        if get_rank() != self.rank or self.marker.exists():
            return False
        self.marker.touch()
        return True

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self.during_save is None and runner.iter + 1 == self.at_iter and self._fire():
            _die()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not (self.peer and runner.iter + 1 == self.at_iter and self._fire()):
            return
        deadline = time.monotonic() + 300
        while not self.writing.exists():  # rank 0 is in the middle of writing checkpoint ``at_iter``
            if time.monotonic() > deadline:
                raise RuntimeError(f'rank 0 did not start writing checkpoint {self.at_iter} within 300 s')
            time.sleep(0.05)
        _die()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.during_save is None and checkpoint['meta']['iter'] < self.at_iter:
            time.sleep(self.save_delay)
        if not (self.during_save and checkpoint['meta']['iter'] >= self.at_iter):
            return
        if self.peer:  # rank 0 (the only one that saves): stop mid-write until torchrun ends it
            if not self.writing.exists():  # (the marker is rank 1's: it may already be there)
                self._die_in_save(stop=self._wait_for_the_end)
        elif self._fire():
            self._die_in_save()

    def _wait_for_the_end(self) -> None:
        self.writing.touch()
        while True:
            time.sleep(1)

    def _die_in_save(self, stop=_die) -> None:
        # The process is about to die: patching os for the rest of its life is harmless.
        if self.during_save == 'write':
            real_fsync = os.fsync

            def cut_and_die(fd: int) -> None:  # the first fsync is the temporary checkpoint file's
                os.ftruncate(fd, int(os.fstat(fd).st_size * self.fraction))
                real_fsync(fd)
                stop()

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


@HOOKS.register_module(force=True)
class PauseForTests(Hook):
    """Stop before iteration ``at_iter`` (1-based), once, until something outside ends the run: it creates
    ``marker`` and sleeps; while the marker exists it does nothing, so the rerun goes through. The Slurm
    tests send the job its preemption signal while it sleeps here, after the checkpoint of iteration
    ``at_iter - 1``."""

    priority = 80

    def __init__(self, marker: str, at_iter: int, timeout: float = 300.0) -> None:
        self.marker = Path(marker)
        self.at_iter = at_iter
        self.timeout = timeout

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if runner.iter + 1 != self.at_iter or get_rank() != 0 or self.marker.exists():
            return
        self.marker.touch()
        time.sleep(self.timeout)
        raise RuntimeError(f'nothing ended the run within {self.timeout:.0f} s of the pause')
