"""The OpenMMLab commands end to end on synthetic ADE20K: train, `dist_test.sh ... --eval`, --out, --show-dir."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import run_tool as _run
from PIL import Image

from mae_dense.data import generate_synthetic_ade20k

ROOT = Path(__file__).resolve().parents[2]
DEMO = 'configs/demo/upernet_vit-tiny_synthetic_ade20k.py'


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('ade')
    root = generate_synthetic_ade20k(tmp / 'ADEChallengeData2016', num_train=6, num_val=3, seed=1)
    opts = [
        f'train_dataloader.dataset.data_root={root}',
        f'val_dataloader.dataset.data_root={root}',
        f'test_dataloader.dataset.data_root={root}',
        'train_cfg.max_iters=4',
        'train_cfg.val_interval=4',
        'default_hooks.checkpoint.interval=4',
        'randomness.seed=0',
    ]
    r = _run(
        [
            sys.executable,
            str(ROOT / 'tools/train.py'),
            str(ROOT / DEMO),
            '--work-dir',
            str(tmp / 'work'),
            '--cfg-options',
            *opts,
        ],
        cwd=tmp,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp, root, opts


def _iou_numpy(pred_dir: Path, ann_dir: Path, num_classes=150):
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    label_area = np.zeros(num_classes)
    correct = total = 0
    for ann in sorted(ann_dir.glob('*.png')):
        gt = np.array(Image.open(ann)).astype(np.int64) - 1  # reduce_zero_label: 0 -> ignore (-1)
        pred = np.array(Image.open(pred_dir / ann.name)).astype(np.int64) - 1  # written as label + 1
        valid = gt >= 0
        g, p = gt[valid], pred[valid]
        correct += (g == p).sum()
        total += valid.sum()
        for c in range(num_classes):
            inter[c] += ((g == c) & (p == c)).sum()
            union[c] += ((g == c) | (p == c)).sum()
            label_area[c] += (g == c).sum()
    # IoU is defined where the union is not empty (a predicted-only class counts as 0), accuracy where
    # the class is in the ground truth.
    seen, present = union > 0, label_area > 0
    return dict(
        aAcc=100 * correct / total,
        mIoU=100 * np.mean(inter[seen] / union[seen]),
        mAcc=100 * np.mean(inter[present] / label_area[present]),
    )


@pytest.mark.parametrize('tta', [False, True])
def test_dist_test_sh_eval_out_show_dir(trained, tta):
    tmp, root, opts = trained
    out, show = tmp / f'out_{tta}', tmp / f'show_{tta}'
    args = [
        'sh',
        str(ROOT / 'tools/dist_test.sh'),
        str(ROOT / DEMO),
        str(tmp / 'work' / 'iter_4.pth'),
        '1',
        *(['--aug-test'] if tta else []),
        '--eval',
        'mIoU',
        'mDice',
        '--out',
        str(out),
        '--show-dir',
        str(show),
        '--work-dir',
        str(tmp / f'tw_{tta}'),
        '--cfg-options',
        *opts[2:3],
    ]
    r = _run(args, cwd=tmp)
    assert r.returncode == 0, ' '.join(args) + r.stdout[-3000:] + r.stderr[-3000:]
    assert 'mIoU' in r.stdout and 'mDice' in r.stdout
    metrics_file = next((tmp / f'tw_{tta}').rglob('metrics_*.json'))
    metrics = json.loads(metrics_file.read_text())['metrics']
    pngs = sorted(p.name for p in out.glob('*.png'))
    assert pngs == sorted(p.name for p in (root / 'annotations' / 'validation').glob('*.png'))
    expect = _iou_numpy(out, root / 'annotations' / 'validation')
    for k in ('aAcc', 'mIoU', 'mAcc'):
        assert metrics[k] == pytest.approx(expect[k], abs=0.01), k
    assert len(list(show.rglob('*.png'))) == 3  # one overlay per image


def test_train_resume_and_errors(trained, tmp_path):
    tmp, root, opts = trained
    r = _run(
        [
            sys.executable,
            str(ROOT / 'tools/test.py'),
            str(ROOT / DEMO),
            str(tmp / 'work' / 'iter_4.pth'),
            '--eval',
            'bogus',
        ],
        cwd=tmp,
    )
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith(
        'error: --eval bogus: not a segmentation'
    )
    r = _run(
        [
            sys.executable,
            str(ROOT / 'tools/train.py'),
            str(ROOT / DEMO),
            '--work-dir',
            str(tmp_path / 'w'),
            '--cfg-options',
            f'train_dataloader.dataset.data_root={tmp_path / "nowhere"}',
        ],
        cwd=tmp,
    )
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and 'nowhere' in last
