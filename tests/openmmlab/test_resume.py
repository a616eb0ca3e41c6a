"""Crash-safe checkpoints and exact resume, piece by piece (the SIGKILL runs are in test_crash_resume.py):
atomic writes, the readability check, the choice of the checkpoint to resume from, the one-line messages,
a failing save that keeps the only checkpoint, the sampler replay against mmengine's own advance, and a
mid-epoch resume of the pretraining loop."""

from __future__ import annotations

import errno
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from helpers import (
    TINY_MAE_CONFIG,
    Killed,
    assert_same_weights,
    config_with_hooks,
    log_text,
    model_state,
)
from mmengine.dataset import DefaultSampler, InfiniteSampler
from mmengine.fileio import get_file_backend
from mmengine.hooks import Hook
from mmengine.logging import MessageHub, MMLogger
from mmengine.registry import HOOKS
from mmengine.runner import loops as mmengine_loops
from torch.utils.data import BatchSampler, DataLoader

import mae_dense.openmmlab  # noqa: F401  (registries)
from mae_dense.cli.train import main as train_main
from mae_dense.openmmlab.engine.checkpointing import (
    AtomicLocalBackend,
    CrashSafeCheckpointHook,
    atomic_write,
    checkpoint_problem,
    choose_resume_checkpoint,
    install_atomic_checkpoints,
)
from mae_dense.openmmlab.engine.loops import _ResumedInfiniteIterator


def _checkpoint(path: Path, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    torch.save({'state_dict': {'w': torch.randn(64, 64, generator=g)}, 'meta': {'iter': seed}}, path)
    return path


# ---------------------------------------------------------------------------------------------- writing
def test_atomic_write_keeps_the_old_file_whole_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / 'ckpt.pth'
    atomic_write(target, b'old')
    assert target.read_bytes() == b'old'

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(os, 'fsync', disk_full)
    with pytest.raises(OSError, match='No space'):
        atomic_write(target, b'new, never complete')
    assert target.read_bytes() == b'old' and sorted(p.name for p in tmp_path.iterdir()) == ['ckpt.pth']
    monkeypatch.undo()

    # once a run that opted in has started (CrashSafeCheckpointHook.before_run, MAEDenseRunner), mmengine
    # writes every local file (checkpoints included) through the atomic backend
    install_atomic_checkpoints()
    backend = get_file_backend(str(target))
    assert isinstance(backend, AtomicLocalBackend)
    backend.put(b'new', target)
    backend.put_text('text', tmp_path / 'sub' / 'last_checkpoint')
    assert target.read_bytes() == b'new' and (tmp_path / 'sub' / 'last_checkpoint').read_text() == 'text'


def test_checkpoint_problem_finds_truncated_empty_corrupt_and_foreign_files(tmp_path):
    good = _checkpoint(tmp_path / 'good.pth')
    assert checkpoint_problem(good) is None
    data = good.read_bytes()
    for fraction in (0.1, 0.5, 0.99):  # a kill during a plain (non-atomic) write leaves a prefix
        cut = tmp_path / f'cut_{fraction}.pth'
        cut.write_bytes(data[: int(len(data) * fraction)])
        assert 'truncated' in checkpoint_problem(cut)
    (tmp_path / 'empty.pth').touch()
    assert checkpoint_problem(tmp_path / 'empty.pth') == 'empty file'
    assert checkpoint_problem(tmp_path / 'absent.pth') == 'missing'
    # a flipped byte inside the tensor data: the zip directory is intact, the CRC is not
    with zipfile.ZipFile(good) as archive:
        info = next(i for i in archive.infolist() if '/data/' in i.filename)
    flipped = bytearray(data)
    flipped[info.header_offset + len(info.FileHeader()) + 100] ^= 0xFF
    (tmp_path / 'flipped.pth').write_bytes(bytes(flipped))
    assert checkpoint_problem(tmp_path / 'flipped.pth').startswith('corrupt (CRC mismatch in')
    legacy = tmp_path / 'legacy.pth'  # torch's pre-zip format: loaded through the policy instead
    torch.save({'w': torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    assert checkpoint_problem(legacy) is None


def test_choose_resume_checkpoint_skips_broken_files_but_never_takes_a_later_stray_one(tmp_path):
    assert choose_resume_checkpoint(tmp_path) == (None, [])  # no last_checkpoint: a fresh start
    for step in (2, 4, 8):
        _checkpoint(tmp_path / f'iter_{step}.pth', step)
    (tmp_path / 'iter_6.pth').write_bytes((tmp_path / 'iter_4.pth').read_bytes()[:500])
    (tmp_path / 'best_mIoU_iter_5.pth').write_bytes(b'')  # another name pattern: never a candidate
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_4.pth'))
    assert choose_resume_checkpoint(tmp_path) == (str(tmp_path / 'iter_4.pth'), [])

    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_6.pth'))
    chosen, skipped = choose_resume_checkpoint(tmp_path)
    # iter_8.pth is readable and newer, but last_checkpoint never named it: left over from an earlier run
    assert chosen == str(tmp_path / 'iter_4.pth')
    assert [(Path(p).name, 'truncated' in why) for p, why in skipped] == [('iter_6.pth', True)]

    for step in (2, 4):
        (tmp_path / f'iter_{step}.pth').write_bytes(b'')
    chosen, skipped = choose_resume_checkpoint(tmp_path)
    assert chosen is None and [Path(p).name for p, _ in skipped] == ['iter_6.pth', 'iter_4.pth', 'iter_2.pth']


# ------------------------------------------------------------------------------------- through the Runner
def train(work: Path, data_root: Path, *options: str, config: Path = TINY_MAE_CONFIG) -> int:
    argv = [str(config), '--work-dir', str(work), '--resume', '--cfg-options']
    argv += [
        f'experiment_name={work.parent.name}-{work.name}',
        f'train_dataloader.dataset.data_root={data_root}',
    ]
    return train_main(argv + ['train_dataloader.batch_size=4', *options])


def test_resume_skips_a_truncated_newest_checkpoint_in_one_line(tmp_path, image_folder, capsys):
    options = [
        'train_cfg.max_epochs=3',
        'default_hooks.checkpoint.interval=1',
        'default_hooks.checkpoint.max_keep_ckpts=3',
    ]
    assert train(tmp_path / 'straight', image_folder, *options) == 0
    # the same run, its newest checkpoint cut short as a killed non-atomic writer leaves it
    work = tmp_path / 'broken'
    shutil.copytree(tmp_path / 'straight', work)
    (work / 'last_checkpoint').write_text(str(work / 'epoch_3.pth'))
    newest = work / 'epoch_3.pth'
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    assert train(work, image_folder, *options) == 0

    lines = [line for line in log_text(work).splitlines() if 'resume: skipped' in line]
    assert len(lines) == 1, lines
    assert f'resume: skipped {newest} (truncated' in lines[0]
    assert lines[0].endswith(f'; resuming from {work / "epoch_2.pth"}')
    # epoch 3 trained again, the same
    assert_same_weights(model_state(tmp_path / 'straight' / 'epoch_3.pth'), model_state(newest))

    # nothing readable left: one line, and no fresh start over the run's files
    for name in ('epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth'):
        (work / name).write_bytes(b'')
    capsys.readouterr()
    assert train(work, image_folder, *options) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f'error: {work}: no readable checkpoint to resume from')


@HOOKS.register_module(force=True)
class DiskFullAtSaveForTests(Hook):
    """Makes the ``save``-th checkpoint write fail as on a full disk (fsync raises ENOSPC)."""

    def __init__(self, save: int) -> None:
        self.save = save
        self.saves = 0

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        self.saves += 1
        if self.saves == self.save:
            real = os.fsync

            def disk_full(fd: int) -> None:
                os.fsync = real
                raise OSError(errno.ENOSPC, 'No space left on device')

            os.fsync = disk_full


def test_a_failed_save_keeps_the_only_checkpoint(tmp_path, image_folder, capsys):
    # max_keep_ckpts=1: mmengine deletes epoch_1.pth *before* writing epoch_2.pth; here it must survive
    config = config_with_hooks(tmp_path, TINY_MAE_CONFIG, dict(type='DiskFullAtSaveForTests', save=2))
    work = tmp_path / 'work'
    options = [
        'train_cfg.max_epochs=2',
        'default_hooks.checkpoint.interval=1',
        'default_hooks.checkpoint.max_keep_ckpts=1',
    ]
    capsys.readouterr()
    assert train(work, image_folder, *options, config=config) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f'error: {work / "epoch_2.pth"}: cannot write the checkpoint (No space left on device); '
        f'{work / "epoch_1.pth"} is kept'
    ]
    assert sorted(p.name for p in work.glob('*.pth')) == ['epoch_1.pth']
    assert choose_resume_checkpoint(work) == (str(work / 'epoch_1.pth'), [])


class _BestRunner:
    """What ``CheckpointHook._save_best_checkpoint`` uses of a runner; ``fail`` makes the next save fail."""

    def __init__(self, work: Path) -> None:
        self.work_dir = str(work)
        self.epoch = 0
        self.iter = 0
        self.message_hub = MessageHub.get_instance('test_best_checkpoint')
        self.logger = MMLogger.get_instance('test_best_checkpoint')
        self.fail = False

    def save_checkpoint(self, out_dir: str, filename: str, *args, **kwargs) -> None:
        if self.fail:
            raise OSError(errno.ENOSPC, 'No space left on device')
        _checkpoint(Path(out_dir) / filename, seed=self.iter)


@pytest.mark.parametrize('indicators', [['mIoU'], ['mIoU', 'aAcc']])
def test_a_failed_best_save_keeps_the_previous_best_checkpoint(tmp_path, indicators):
    # mmengine removes best_mIoU_iter_100.pth before it writes the new best one; here it must survive
    hook = CrashSafeCheckpointHook(interval=1000, by_epoch=False, save_best=indicators, rule='greater')
    runner = _BestRunner(tmp_path)
    hook.out_dir = str(tmp_path)
    hook.file_backend = get_file_backend(hook.out_dir)
    hook.best_ckpt_path_dict = dict.fromkeys(indicators)

    def evaluate(at: int, score: float) -> None:
        runner.iter = at
        hook._save_best_checkpoint(runner, dict.fromkeys(indicators, score))

    evaluate(100, 10.0)
    runner.fail = True
    with pytest.raises(OSError):
        evaluate(200, 20.0)
    for key in indicators:
        kept = tmp_path / f'best_{key}_iter_100.pth'
        assert kept.is_file() and checkpoint_problem(kept) is None
        remembered = hook.best_ckpt_path if len(indicators) == 1 else hook.best_ckpt_path_dict[key]
        assert remembered == str(kept)
    runner.fail = False
    evaluate(300, 30.0)
    assert sorted(p.name for p in tmp_path.glob('best_*.pth')) == sorted(
        f'best_{key}_iter_300.pth' for key in indicators
    )
    evaluate(400, 5.0)  # not better: nothing written, nothing removed
    assert sorted(p.name for p in tmp_path.glob('best_*.pth')) == sorted(
        f'best_{key}_iter_300.pth' for key in indicators
    )


@HOOKS.register_module(force=True)
class StopBeforeIterForTests(Hook):
    """Stands for a killed job: raises before iteration ``at_iter`` (1-based) starts."""

    priority = 'HIGHEST'

    def __init__(self, at_iter: int) -> None:
        self.at_iter = at_iter

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if runner.iter + 1 == self.at_iter:
            raise Killed


def test_pretraining_resumes_mid_epoch_exactly(tmp_path, image_folder):
    # 4 iterations per epoch, a checkpoint every 3: killed before iteration 6, resumed at iteration 3,
    # i.e. after the 3rd of epoch 1's 4 batches (mmengine's epoch loop would restart epoch 1 from batch 1)
    options = [
        'train_cfg.max_epochs=2',
        'default_hooks.checkpoint.by_epoch=False',
        'default_hooks.checkpoint.interval=3',
        'default_hooks.checkpoint.max_keep_ckpts=1',
    ]
    assert train(tmp_path / 'straight', image_folder, *options) == 0
    config = config_with_hooks(tmp_path, TINY_MAE_CONFIG, dict(type='StopBeforeIterForTests', at_iter=6))
    work = tmp_path / 'resumed'
    with pytest.raises(Killed):
        train(work, image_folder, *options, config=config)
    assert choose_resume_checkpoint(work) == (str(work / 'iter_3.pth'), [])
    assert train(work, image_folder, *options) == 0
    assert_same_weights(model_state(tmp_path / 'straight' / 'iter_8.pth'), model_state(work / 'iter_8.pth'))
    assert 'resume: epoch 1 continues at batch 4 of 4 (sampler replayed, no batch loaded)' in log_text(work)


# ---------------------------------------------------------------------------------------- sampler replay
class _Indices(torch.utils.data.Dataset):
    """Item i is i; ``get_data_info`` gives mmdet's AspectRatioBatchSampler mixed aspect ratios."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> int:
        return i

    def get_data_info(self, i: int) -> dict:
        return dict(width=100, height=60 if i % 3 else 140)


def _loader(kind: str) -> DataLoader:
    dataset = _Indices()
    if kind == 'infinite':
        sampler = InfiniteSampler(dataset, seed=3)
    else:
        sampler = DefaultSampler(dataset, seed=3)  # finite: passes end and restart with set_epoch
    if kind == 'aspect_ratio':
        from mmdet.datasets.samplers import AspectRatioBatchSampler

        batch_sampler = AspectRatioBatchSampler(sampler, batch_size=3)
    else:
        batch_sampler = BatchSampler(sampler, batch_size=3, drop_last=kind == 'infinite')
    return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=list)


@pytest.mark.parametrize('kind', ['infinite', 'finite', 'aspect_ratio'])
@pytest.mark.parametrize('start', [0, 3, 4, 9])
def test_replayed_sampler_continues_as_mmengines_advance(kind, start, monkeypatch):
    monkeypatch.setattr(mmengine_loops.time, 'sleep', lambda seconds: None)  # mmengine pauses per pass
    reference = mmengine_loops._InfiniteDataloaderIterator(_loader(kind))
    for _ in range(start):  # what IterBasedTrainLoop does on resume: load and drop every trained batch
        next(reference)
    resumed = _ResumedInfiniteIterator(_loader(kind), start)
    expected = [next(reference) for _ in range(8)]  # across the end of one or two passes
    assert [next(resumed) for _ in range(8)] == expected


def test_a_checkpoint_inside_an_accumulation_window_says_so_once(tmp_path, image_folder):
    # 4 iterations per epoch, a window of 3: the checkpoints after epochs 1 and 2 hold 1 and 2 of 3
    options = [
        'train_cfg.max_epochs=2',
        'default_hooks.checkpoint.interval=1',
        'optim_wrapper.accumulative_counts=3',
    ]
    assert train(tmp_path / 'work', image_folder, *options) == 0
    lines = [
        line for line in log_text(tmp_path / 'work').splitlines() if 'gradient-accumulation window' in line
    ]
    assert len(lines) == 1 and 'checkpoint 1 falls inside a gradient-accumulation window (1 of 3' in lines[0]
