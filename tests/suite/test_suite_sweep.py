"""The per-row lr search of a fine-tuning task, the data pre-flight, and the dry run of the shipped pipelines.

The sweep runs the real pipeline (spec, cells, scheduler, store, report) with a stand-in for the train and
test commands (in the spirit of ``tests/fake_probe.py``): training writes a checkpoint that records its lr,
the test reports an mIoU that peaks at lr 2e-4, so the best point is known.
"""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest
import torch
from helpers import write_yaml

from mae_dense.suite.cell import Cell
from mae_dense.suite.commands import pipeline_main

ROOT = Path(__file__).resolve().parents[2]
ADE = 'configs/demo/upernet_vit-tiny_synthetic_ade20k.py'
LRS = [1e-4, 2e-4, 4e-4]


def _fake_miou(lr: float, seed: int) -> float:
    return 40.0 - 3.0 * abs(math.log2(lr / 2e-4)) + 0.5 * seed


def _fake_launch(calls: list):
    """A stand-in for Cell.launch: the train and test commands' outputs, from their --cfg-options."""

    def launch(self, module, args, gpus, devices, log, what):
        opts = dict(a.split('=', 1) for a in args[args.index('--cfg-options') + 1 :])
        work = Path(args[args.index('--work-dir') + 1])
        work.mkdir(parents=True, exist_ok=True)
        lr, seed = float(opts['optim_wrapper.optimizer.lr']), int(opts['randomness.seed'])
        calls.append((self.key, module.rsplit('.', 1)[-1], lr))
        if module == 'mae_dense.cli.train':
            ckpt = work / 'iter_2.pth'
            torch.save({'optimizer': {'param_groups': [{'lr': lr, 'initial_lr': lr}]}, 'meta': {}}, ckpt)
            (work / 'last_checkpoint').write_text(str(ckpt))
        else:
            (work / 'run').mkdir(exist_ok=True)
            metrics = {'mIoU': _fake_miou(lr, seed), 'aAcc': 70.0}
            (work / 'run' / 'metrics_1.json').write_text(json.dumps({'metrics': metrics}))

    return launch


def _ade_data(tmp_path: Path) -> dict[str, str]:
    from mae_dense.data import generate_synthetic_ade20k

    ade = generate_synthetic_ade20k(tmp_path / 'ADEChallengeData2016', num_train=2, num_val=1, seed=3)
    return {f'{k}_dataloader.dataset.data_root': str(ade) for k in ('train', 'val', 'test')}


@pytest.mark.slow
def test_sweep_runs_each_point_picks_the_best_on_val_and_keeps_every_point(tmp_path, monkeypatch, capsys):
    calls: list = []
    monkeypatch.setattr(Cell, 'launch', _fake_launch(calls))
    cfg = dict(
        work_dir=str(tmp_path / 'work'),
        results_dir=str(tmp_path / 'results'),
        seeds=[0, 1],
        backbones=[dict(name='scratch', random=True)],
        ade20k=dict(config=ADE, ms_flip=False, cfg_options=_ade_data(tmp_path), sweep={'lr': LRS}),
        qualitative=False,
    )
    path = write_yaml(tmp_path / 'p.yaml', cfg)
    assert pipeline_main([str(path)]) == 0
    trained = [(key, lr) for key, what, lr in calls if what == 'train']
    assert trained == [
        ('scratch/ade20k/seed0/lr=0.0001', 1e-4),
        ('scratch/ade20k/seed0/lr=0.0002', 2e-4),
        ('scratch/ade20k/seed0/lr=0.0004', 4e-4),
        ('scratch/ade20k/seed1', 2e-4),  # the best point on the first seed, then the other seed
    ]
    assert 'scratch/ade20k/seed1: best of 3 on val (mIoU): lr=0.0002' in capsys.readouterr().out
    board = json.loads((tmp_path / 'results/leaderboard.json').read_text())
    runs = {
        (r['seed'], r['card']['sweep'].get('point', r['card']['sweep'].get('chosen'))[0][1]): r
        for r in board['runs']
    }
    assert sorted(runs) == [(0, 1e-4), (0, 2e-4), (0, 4e-4), (1, 2e-4)]  # every point kept in the store
    assert (
        runs[(1, 2e-4)]['card']['sweep']['chosen'] == [['lr', 2e-4]] and runs[(1, 2e-4)]['card']['lr'] == 2e-4
    )
    assert runs[(0, 2e-4)]['config_hash'] == runs[(1, 2e-4)]['config_hash'] != runs[(0, 1e-4)]['config_hash']
    miou = {(r['status'], r['value'], r['n']) for r in board['results'] if r['metric'] == 'mIoU'}
    best = (_fake_miou(2e-4, 0) + _fake_miou(2e-4, 1)) / 2
    assert miou == {
        ('done', best, 2),
        ('sweep point', _fake_miou(1e-4, 0), 1),
        ('sweep point', _fake_miou(4e-4, 0), 1),
    }
    chosen = next(r for r in board['results'] if r['status'] == 'done' and r['metric'] == 'mIoU')
    assert chosen['card']['lr_searched'] == 'best of 3 on val (mIoU: test_ss mIoU)'
    md = (tmp_path / 'results/leaderboard.md').read_text()
    row = next(line for line in md.splitlines() if line.startswith('| scratch |'))
    assert row.split(' | ')[2].startswith(f'{best:.2f} ± 0.35 (n=2) (')  # one number: the chosen point's
    assert 'scratch / ADE20K: best of 3 on val (mIoU: test_ss mIoU)' in md
    sweeps = [line for line in md.splitlines() if line.startswith('| scratch | ADE20K | lr=')]
    assert [s.split(' | ')[2:] for s in sweeps] == [
        ['lr=0.0001', 'mIoU: test_ss mIoU', f'{_fake_miou(1e-4, 0):.2f}', ' |'],
        ['lr=0.0002', 'mIoU: test_ss mIoU', f'{_fake_miou(2e-4, 0):.2f}', 'best of 3 on val |'],
        ['lr=0.0004', 'mIoU: test_ss mIoU', f'{_fake_miou(4e-4, 0):.2f}', ' |'],
    ]
    calls.clear()  # a relaunch: every cell, the choosing one included, is resumed as done
    assert pipeline_main([str(path)]) == 0 and calls == []


def test_preflight_refuses_a_missing_ade20k_root_before_pretraining_starts(tmp_path, image_folder, capsys):
    missing = tmp_path / 'nowhere' / 'ADEChallengeData2016'
    cfg = dict(
        work_dir=str(tmp_path / 'work'),
        results_dir=str(tmp_path / 'results'),
        backbones=[
            dict(
                name='mae-tiny',
                pretrain=dict(
                    config='configs/demo/mae_vit-tiny-p16_synthetic.py',
                    cfg_options={'train_dataloader.dataset.data_root': str(image_folder)},
                ),
            )
        ],
        ade20k=dict(
            config=ADE,
            cfg_options={f'{k}_dataloader.dataset.data_root': str(missing) for k in ('train', 'val', 'test')},
        ),
    )
    assert pipeline_main([str(write_yaml(tmp_path / 'p.yaml', cfg))]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f'error: {tmp_path}/p.yaml: pre-flight: ade20k: ADE20K data root {missing} not found'
    )
    assert err[0].endswith('; nothing was started')
    assert not (tmp_path / 'work').exists()  # the pretraining stage never started


@pytest.mark.slow
def test_dry_run_of_both_shipped_pipelines_offline(tmp_path, monkeypatch):
    """Every cell (sweep points and choosing cells), every download with its size or 'unknown offline', the
    gated DINOv3 files the user supplies, the pre-flight's verdict and a labelled GPU-hours estimate; no
    network, nothing written."""
    from mae_dense.suite.dryrun import dry_run
    from mae_dense.suite.spec import load_spec

    def no_network(*args, **kwargs):
        raise AssertionError('the dry run opened a network connection')

    monkeypatch.setattr(socket.socket, 'connect', no_network)
    monkeypatch.chdir(tmp_path)
    pipelines = ROOT / 'mae_dense/configs/pipelines'
    paper = dry_run(load_spec(pipelines / 'mae_paper_transfer.yaml'))
    assert 'cells (70; seeds [0, 1, 2]):' in paper  # 7 backbones x 2 tasks x (3 points + 2 seeds)
    assert any(
        line.startswith('  mocov3-b/ade20k/seed0/lr=0.0002 [sweep point lr=0.0002]: 8 GPU; ~')
        for line in paper
    )
    seed1 = next(line for line in paper if line.startswith('  mae-l/coco/seed1 '))
    assert (
        '[best of 3 on val (box AP), chosen when it starts]' in seed1
        and 'after mae-l/coco/seed0/lr=0.0001' in seed1
    )
    assert (
        '  mocov3-b: https://dl.fbaipublicfiles.com/moco-v3/vit-b-300ep/vit-b-300ep.pth.tar (size unknown offline)'
        in paper
    )
    assert paper[-1].startswith('GPU-hours: ~') and 'an ESTIMATE, not a measurement: H100 SXM' in paper[-1]
    probe = dry_run(load_spec(pipelines / 'frozen_probe.yaml'))
    assert 'cells (30; seeds [0, 1, 2]):' in probe
    gated = [line for line in probe if 'gated, no URL: the user supplies' in line]
    assert len(gated) == 2 and all('dinov3_vit' in line and '(missing)' in line for line in gated)
    assert any(line.startswith('  dinov2-l-reg/probe/seed0: 1 GPU; ~') for line in probe)
    assert any(
        line.startswith('  probe: ADE20K data root data/ade/ADEChallengeData2016 not found') for line in probe
    )
    assert list(tmp_path.iterdir()) == []  # no work dir, no store, no download
