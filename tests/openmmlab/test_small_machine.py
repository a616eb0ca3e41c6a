"""Small-machine overrides: loader options a CPU machine cannot take, a batch larger than a tiny data set
and a run shorter than the warm-up work, each fitted with one log line (``MAEDenseRunner``), for the train,
val and test loaders, and the command a new user types on a laptop."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TINY_MAE, TINY_MAE_CONFIG, log_text, run_tool

import mae_dense.openmmlab  # noqa: F401  (registries)
from mae_dense.checkpoint import load_file
from mae_dense.cli.test import main as evaluate
from mae_dense.cli.train import main as train_main
from mae_dense.data import generate_synthetic_ade20k
from mae_dense.openmmlab.engine.runner import fit_loader_cfg

ROOT = Path(__file__).resolve().parents[2]
ADE_DEMO = ROOT / 'configs/demo/upernet_vit-tiny_synthetic_ade20k.py'
NO_WORKERS_OPTIONS = ['num_workers=0', 'persistent_workers=True', 'pin_memory=True', 'prefetch_factor=2']


def test_fit_loader_cfg_drops_what_needs_workers_or_an_accelerator():
    cfg = dict(batch_size=2, num_workers=0, persistent_workers=True, prefetch_factor=4, pin_memory=True)
    fitted, changes = fit_loader_cfg(cfg, accelerator=False)
    assert fitted == dict(batch_size=2, num_workers=0, persistent_workers=False, pin_memory=False)
    assert changes == [
        'persistent_workers=True needs worker processes (num_workers=0): set to False',
        'prefetch_factor=4 needs worker processes: dropped',
        'pin_memory=True without an accelerator: set to False',
    ]
    assert cfg['persistent_workers'] is True  # the config itself is not changed
    with_workers = dict(cfg, num_workers=2)
    assert fit_loader_cfg(with_workers, accelerator=True) == (with_workers, [])


def test_pretraining_fits_loader_batch_and_schedule_to_a_tiny_cpu_run(tmp_path, image_folder):
    # 16 images, batch 64 with drop_last=True (no iteration at all), worker-only options, 1 epoch while the
    # cosine phase begins after a 1-epoch warm-up (mmengine refuses a scheduler with begin >= end)
    work = tmp_path / 'work'
    argv = [
        str(TINY_MAE_CONFIG),
        '--work-dir',
        str(work),
        '--cfg-options',
        f'train_dataloader.dataset.data_root={image_folder}',
    ]
    argv += [f'train_dataloader.{option}' for option in NO_WORKERS_OPTIONS]
    argv += ['train_dataloader.batch_size=64', 'train_cfg.max_epochs=1', 'experiment_name=tiny-cpu']
    assert train_main(argv) == 0
    log = log_text(work)
    for line in (
        'train_dataloader: persistent_workers=True needs worker processes (num_workers=0): set to False',
        'train_dataloader: prefetch_factor=2 needs worker processes: dropped',
        'train_dataloader: pin_memory=True without an accelerator: set to False',
        'train_dataloader: batch_size=64 with drop_last=True gives no iteration on 16 samples per process '
        '(1 process(es)): batch_size set to 16',
        'param_scheduler CosineAnnealingLR begins at epoch 1, after the last epoch of this run (1): left out',
        'effective batch 16 = 16 per process x 1 accumulation steps x 1 processes',  # the lr follows
    ):
        assert log.count(line) == 1, line
    assert load_file(work / 'epoch_1.pth')['meta']['iter'] == 1  # one iteration of the 16 images


@pytest.mark.slow
def test_val_and_test_loaders_take_the_same_overrides(tmp_path):
    root = generate_synthetic_ade20k(tmp_path / 'ADEChallengeData2016', num_train=2, num_val=2, seed=1)
    # the real ADE20K config's val/test loaders: 4 persistent workers; here overridden to none
    loaders = {split: [f'{split}_dataloader.{o}' for o in NO_WORKERS_OPTIONS] for split in ('val', 'test')}
    data = [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')]
    work = tmp_path / 'work'
    argv = [str(ADE_DEMO), '--work-dir', str(work), '--cfg-options', *data, *loaders['val']]
    argv += ['train_dataloader.batch_size=2', 'train_cfg.max_iters=1', 'train_cfg.val_interval=1']
    argv += ['randomness.seed=0', 'experiment_name=ade-cpu']
    assert train_main(argv) == 0
    assert 'val_dataloader: persistent_workers=True needs worker processes' in log_text(work)

    tested = tmp_path / 'test'
    argv = [str(ADE_DEMO), str(work / 'iter_1.pth'), '--work-dir', str(tested), '--cfg-options', *data]
    assert evaluate([*argv, *loaders['test'], 'experiment_name=ade-cpu-test']) == 0
    log = log_text(tested)
    for change in ('persistent_workers=True needs', 'prefetch_factor=2 needs', 'pin_memory=True without'):
        assert f'test_dataloader: {change}' in log


def test_batch_of_one_under_batchnorm_stops_with_one_line(tmp_path, capsys):
    # UperNet's 1x1 pyramid pooling gives BatchNorm one value per channel with one image per process
    root = generate_synthetic_ade20k(tmp_path / 'ADEChallengeData2016', num_train=2, num_val=1, seed=1)
    data = [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')]
    argv = [str(ADE_DEMO), '--work-dir', str(tmp_path / 'work'), '--cfg-options', *data]
    argv += ['train_dataloader.batch_size=1', 'train_dataloader.num_workers=0', 'train_cfg.max_iters=1']
    capsys.readouterr()
    assert train_main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        'error: train_dataloader.batch_size=1: decode_head.psp_modules.0.1.bn (BatchNorm2d) gets one value per '
        'channel in training (input (1, 64, 1, 1)); it needs at least 2 images per process: '
        'set train_dataloader.batch_size=2 or more'
    ]
    # two images per process train as before
    argv[argv.index('train_dataloader.batch_size=1')] = 'train_dataloader.batch_size=2'
    assert train_main([*argv, 'train_cfg.val_interval=1']) == 0


@pytest.mark.slow
def test_new_user_dist_train_command_runs_on_cpu(tmp_path, image_folder):
    # What a new user types to try the ViT-B recipe on a laptop (model shrunk to keep the test short)
    args = [
        'sh',
        str(ROOT / 'tools/dist_train.sh'),
        'configs/pretrain/mae_vit-base-p16_8xb512-amp-coslr-800e_in1k.py',
    ]
    args += ['2', '--cfg-options', 'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0']
    args += ['train_cfg.max_epochs=1', f'train_dataloader.dataset.data_root={image_folder}']
    tiny = ['model.arch=None', *(f'model.{k}={v}' for k, v in TINY_MAE.items())]  # the tiny MAE's sizes
    args += [*tiny, 'train_dataloader.dataset.img_size=32']
    (tmp_path / 'configs').symlink_to(ROOT / 'configs')
    r = run_tool(args, cwd=tmp_path, OMP_NUM_THREADS='1')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    work = tmp_path / 'work_dirs' / 'mae_vit-base-p16_8xb512-amp-coslr-800e_in1k'
    assert load_file(work / 'epoch_1.pth')['meta']['iter'] == 4  # 16 images / (2 per process x 2)
    log = log_text(work)
    assert 'train_dataloader: persistent_workers=True needs worker processes (num_workers=0)' in log
    assert 'param_scheduler CosineAnnealingLR begins at epoch 40, after the last epoch of this run (1)' in log
