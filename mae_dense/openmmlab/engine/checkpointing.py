"""Checkpoints that survive a kill at any instant, and a resume that skips a broken newest checkpoint.

Opt-in, through mmengine's own extension points, never by replacing one of its names: a config names
``default_hooks.checkpoint=dict(type='CrashSafeCheckpointHook', ...)`` (the shipped configs do); the hook
and the project's Runner (:class:`~mae_dense.openmmlab.engine.runner.MAEDenseRunner`) install the atomic writes
when the run starts (:func:`install_atomic_checkpoints`).

* **Atomic writes.** Local paths get :class:`AtomicLocalBackend` (mmengine's file-backend registry, prefix
  ``''``): ``put``/``put_text`` write a hidden temporary file in the same directory, flush and fsync it,
  rename it over the target and fsync the directory. ``Runner.save_checkpoint`` writes through it, so a
  checkpoint file is either the previous complete one or the new complete one, never a prefix.
* **Safe order.** :class:`CrashSafeCheckpointHook` is mmengine's ``CheckpointHook`` (same arguments) that
  writes the new checkpoint, then ``last_checkpoint`` (atomically), and only then deletes the checkpoint
  that ``max_keep_ckpts`` retires. mmengine 0.10 deletes it *before* saving, so with ``max_keep_ckpts=1`` a
  kill during the save left no checkpoint at all. The same order holds for the ``save_best`` checkpoint.
* **No rank passes a checkpoint that is not on disk.** mmengine saves on rank 0 only, with no barrier, so
  the other ranks used to run on while rank 0 was still writing; one of them dying then (torchrun ends rank
  0 mid-write) lost the whole interval. Every save (interval, last, ``save_best``) ends with a barrier
  after rank 0's atomic write and ``last_checkpoint`` update: a kill of any rank after it resumes from that
  checkpoint, a kill before it from the previous one.
* **Resume skips what cannot be read.** On an automatic resume (``resume=True`` / ``--resume`` without a
  file) the checkpoint that ``last_checkpoint`` names is checked first (zip directory and CRCs, no
  unpickling); if it is truncated or unreadable, the newest older checkpoint of the same run that is
  readable is used, and one line names both. A kill leaves ``.<name>.<pid>.partial`` files; the next run
  removes them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import zipfile
from pathlib import Path

from mmengine.dist import barrier, broadcast_object_list, get_world_size, is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.runner.base_loop import BaseLoop

from ...checkpoint.safe_load import load_file
from ...errors import CheckpointError

__all__ = [
    'AtomicLocalBackend',
    'CrashSafeCheckpointHook',
    'atomic_write',
    'checkpoint_problem',
    'choose_resume_checkpoint',
    'install_atomic_checkpoints',
]

_PARTIAL = re.compile(r'^\..+\.\d+\.partial$')  # what atomic_write leaves behind when killed


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a kill at any instant leaves the old file or the new one, whole.

    The bytes go to ``.<name>.<pid>.partial`` in the same directory (same file system, so the rename is
    atomic), are flushed and fsynced, then renamed over ``path``; the directory is fsynced last.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f'.{path.name}.{os.getpid()}.partial'
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


class AtomicLocalBackend(LocalBackend):
    """mmengine's ``LocalBackend`` whose writes are atomic (:func:`atomic_write`)."""

    def put(self, obj: bytes, filepath: str | Path) -> None:
        atomic_write(filepath, obj)

    def put_text(self, obj: str, filepath: str | Path, encoding: str = 'utf-8') -> None:
        atomic_write(filepath, obj.encode(encoding))


def install_atomic_checkpoints() -> None:
    """Local paths (no ``scheme://``) write through :class:`AtomicLocalBackend` from now on; idempotent.

    Called when a run that opted in starts (:class:`CrashSafeCheckpointHook`, ``MAEDenseRunner``).
    """
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')


# =================================================================================================== resume
def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be resumed from (missing, empty, truncated, corrupt), or None if it is readable.

    torch's zip format is checked without unpickling: the central directory at the end (a truncated file has
    none) and every member's CRC (which reads the file once). A file in another format is loaded through
    the project's loading policy instead.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        return 'missing'
    if size == 0:
        return 'empty file'
    if not zipfile.is_zipfile(path):
        try:
            load_file(path, map_location='cpu')
        except CheckpointError:
            return 'truncated or not a checkpoint (no zip directory at its end)'
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not any(n.endswith('/data.pkl') or n == 'data.pkl' for n in names):
                return 'not a torch checkpoint (no data.pkl)'
            corrupt = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return f'unreadable ({type(exc).__name__}: {exc})'
    return f'corrupt (CRC mismatch in {corrupt})' if corrupt else None


def _step(name: str, pattern: re.Pattern) -> int | None:
    match = pattern.fullmatch(name)
    return int(match.group(1)) if match else None


def _older_checkpoints(named: Path) -> list[Path]:
    """Checkpoints beside ``named`` with its name pattern (``iter_8.pth`` -> ``iter_N.pth``) and a smaller N,
    newest first. Larger N are not candidates: they may be left over from an earlier run in this directory."""
    digits = re.search(r'\d+', named.name)
    if digits is None or not named.parent.is_dir():
        return []
    pattern = re.compile(
        re.escape(named.name[: digits.start()]) + r'(\d+)' + re.escape(named.name[digits.end() :])
    )
    limit = int(digits.group())
    steps = ((_step(p.name, pattern), p) for p in named.parent.iterdir() if p.is_file())
    return [p for _, p in sorted(((s, p) for s, p in steps if s is not None and s < limit), reverse=True)]


def choose_resume_checkpoint(work_dir: str | os.PathLike) -> tuple[str | None, list[tuple[str, str]]]:
    """The checkpoint an automatic resume in ``work_dir`` should load, and the files skipped on the way.

    Returns:
        ``(None, [])`` when there is no ``last_checkpoint`` (a fresh start, as mmengine), ``(named, [])``
        when the file it names is readable, else ``(older readable file or None, [(skipped, why), ...])``.
    """
    marker = Path(work_dir) / 'last_checkpoint'
    if not marker.is_file():
        return None, []
    named = marker.read_text().strip()
    if not named:
        return None, [(str(marker), 'empty')]
    skipped: list[tuple[str, str]] = []
    for candidate in [Path(named), *_older_checkpoints(Path(named))]:
        why = checkpoint_problem(candidate)
        if why is None:
            return str(candidate), skipped
        skipped.append((str(candidate), why))
    return None, skipped


@HOOKS.register_module(force=True)
class CrashSafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` (same arguments) that survives a kill at any instant.

    A config opts in with ``default_hooks.checkpoint=dict(type='CrashSafeCheckpointHook', ...)``.

    * saves are atomic (through :class:`AtomicLocalBackend`, installed when the run starts), and so is
      ``last_checkpoint``;
    * the checkpoint retired by ``max_keep_ckpts`` is deleted only after the new one and
      ``last_checkpoint`` are on disk, never before;
    * likewise the previous ``save_best`` checkpoint is deleted only after the new best one is written;
    * an automatic resume skips a truncated or unreadable newest checkpoint (:func:`choose_resume_checkpoint`)
      and says so in one line; with nothing readable left it stops with one line instead of starting over;
    * partial files of an interrupted save are removed when training starts again;
    * in a distributed run every save ends with a barrier once the checkpoint and ``last_checkpoint`` are on
      disk, so no rank runs ahead of a checkpoint that a kill could still lose.
    """

    def before_run(self, runner) -> None:
        install_atomic_checkpoints()  # before anything is saved, whichever Runner runs the hook
        super().before_run(runner)
        training = isinstance(runner._train_loop, BaseLoop)  # Runner.train() builds its loop before this
        if not (training and runner._resume and runner._load_from is None):  # not an automatic resume
            return
        decision = [choose_resume_checkpoint(runner.work_dir) if is_main_process() else None]
        if get_world_size() > 1:
            broadcast_object_list(decision)  # every process resumes from the file rank 0 checked
        chosen, skipped = decision[0]
        if not skipped:
            return  # nothing to resume (fresh start) or the named file is fine: mmengine's own path
        listed = ', '.join(f'{path} ({why})' for path, why in skipped)
        if chosen is None:
            raise CheckpointError(
                f'{runner.work_dir}: no readable checkpoint to resume from (skipped: {listed}); to start '
                'over, use another --work-dir or --cfg-options resume=False'
            )
        print_log(
            f'resume: skipped {listed}; resuming from {chosen}', logger='current', level=logging.WARNING
        )
        runner._load_from = chosen  # mmengine resumes from load_from when resume=True

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if not is_main_process():
            return
        for directory in {Path(runner.work_dir), Path(self.out_dir)}:
            if not directory.is_dir():
                continue
            partial = sorted(p for p in directory.iterdir() if _PARTIAL.match(p.name))
            for p in partial:
                with contextlib.suppress(OSError):
                    p.unlink()
            if partial:
                print_log(
                    f'removed {len(partial)} partial file(s) of an interrupted save in {directory}: '
                    + ', '.join(p.name for p in partial),
                    logger='current',
                )

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        # As CheckpointHook's, except that the retired checkpoint is deleted after the save, not before.
        retired = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                retired = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            # saved in the new checkpoint: a resumed run knows which files it still owns
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        previous = self.last_ckpt or runner.message_hub.get_info('last_ckpt')  # (restored on resume)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        try:
            runner.save_checkpoint(
                self.out_dir,
                ckpt_filename,
                self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler,
                meta=meta,
                by_epoch=self.by_epoch,
                backend_args=self.backend_args,
                **self.args,
            )
        except OSError as exc:  # disk full, quota, permissions: the previous checkpoint is untouched
            kept = f'{previous} is kept' if previous else 'no earlier checkpoint of this run'
            raise CheckpointError(
                f'{self.last_ckpt}: cannot write the checkpoint ({exc.strerror or exc}); {kept}'
            ) from None
        if is_main_process():
            self._warn_if_mid_accumulation(runner, step)
            atomic_write(os.path.join(runner.work_dir, 'last_checkpoint'), str(self.last_ckpt).encode())
            if retired is not None:
                self._retire(self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(retired)))
        barrier()  # no rank runs past a checkpoint that is not complete on disk (a no-op on one process)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        # mmengine deletes the previous best checkpoint *before* it writes the new one, so a kill or a full
        # disk in between left no best checkpoint. Hide the previous ones from it, and delete each only once
        # the checkpoint that replaces it is written.
        if not self.save_best:
            return
        single = len(self.key_indicators) == 1
        previous = {None: self.best_ckpt_path} if single else dict(self.best_ckpt_path_dict)
        for key in previous:
            self._set_best_path(key, None)
        saved = False
        try:
            super()._save_best_checkpoint(runner, metrics)
            saved = True
        finally:
            for key, old in previous.items():
                new = self.best_ckpt_path if key is None else self.best_ckpt_path_dict.get(key)
                if new is None or not saved:  # not improved, or its save failed: the previous one stays
                    self._set_best_path(key, old)
                elif old and old != new and is_main_process():
                    self._retire(old)
                    runner.logger.info(f'The previous best checkpoint {old} is removed')
        barrier()  # as for interval checkpoints: the best checkpoint is on disk before any rank goes on

    def _set_best_path(self, key: str | None, path: str | None) -> None:
        if key is None:
            self.best_ckpt_path = path
        else:
            self.best_ckpt_path_dict[key] = path

    def _warn_if_mid_accumulation(self, runner, step: int) -> None:
        """Gradients accumulated so far in an ``accumulative_counts`` window are not in the checkpoint."""
        wrapper = runner.optim_wrapper
        window = getattr(wrapper, '_accumulative_counts', 1)
        pending = getattr(wrapper, '_inner_count', 0) % window
        if pending and not getattr(self, '_warned_accumulation', False):
            self._warned_accumulation = True
            print_log(
                f'checkpoint {step} falls inside a gradient-accumulation window ({pending} of {window} '
                'iterations accumulated, not saved): a resume from it redoes the rest of the window without '
                'them; a checkpoint interval that is a multiple of accumulative_counts avoids this',
                logger='current',
                level=logging.WARNING,
            )

    def _retire(self, path: str) -> None:
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # checkpoints saved by DeepSpeed are directories
            self.file_backend.rmtree(path)
