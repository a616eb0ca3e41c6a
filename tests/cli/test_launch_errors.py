"""Bad input through `sh tools/dist_train.sh` / `dist_test.sh`: one line, and it is the last line on screen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import run_tool
from PIL import Image

from mae_dense.data import generate_synthetic_ade20k

ROOT = Path(__file__).resolve().parents[2]
ADE = str(ROOT / 'configs/demo/upernet_vit-tiny_synthetic_ade20k.py')
COCO = str(ROOT / 'configs/demo/mask-rcnn_vit-tiny_synthetic_coco.py')


def _dist(script: str, *args: str, cwd: Path):
    return run_tool(['sh', str(ROOT / 'tools' / script), *args], cwd=cwd)


def _last_line(r) -> str:
    return r.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    'script,args,expect',
    [
        (
            'dist_test.sh',
            [ADE, 'missing.pth', '1', '--eval', 'mIoU'],
            'error: missing.pth: checkpoint file not found',
        ),
        ('dist_train.sh', ['configs/nope.py', '1'], 'error: configs/nope.py: config file not found'),
        (
            'dist_train.sh',
            [ADE, '1', '--resume', 'gone.pth'],
            'error: --resume gone.pth: checkpoint file not found',
        ),
        (
            'dist_test.sh',
            [COCO, 'CKPT', '1', '--eval', 'mIoU'],
            f'error: --eval mIoU: not a COCO metric, and {COCO} is a detection config '
            '(CocoMetricScoringNoDetections); expected bbox',
        ),
    ],
    ids=['missing-checkpoint', 'missing-config', 'missing-resume', 'detection-config-segmentation-metric'],
)
def test_arguments_are_checked_before_torchrun(tmp_path, script, args, expect):
    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'not used: the check fails first')
    args = [str(ckpt) if a == 'CKPT' else a for a in args]
    r = _dist(script, *args, cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().count('\n') == 0 and _last_line(r).startswith(expect), r.stderr
    assert 'ChildFailedError' not in r.stderr and 'torch.distributed' not in r.stderr  # nothing started


def test_work_dir_that_is_a_file(tmp_path):
    (tmp_path / 'w').write_text('')
    r = _dist('dist_train.sh', ADE, '1', '--work-dir', str(tmp_path / 'w'), cwd=tmp_path)
    assert (
        r.returncode == 1
        and r.stderr.strip() == f'error: --work-dir {tmp_path / "w"}: exists and is not a directory'
    )


@pytest.mark.slow
def test_error_inside_the_processes_is_the_last_line(tmp_path):
    """A label PNG whose size differs from its image: the data check fails in every process after torchrun
    started; torchrun's ChildFailedError report follows, and then the one line again."""
    root = generate_synthetic_ade20k(tmp_path / 'ADEChallengeData2016', num_train=3, num_val=2, seed=0)
    label = root / 'annotations/training/ADE_train_00000002.png'
    small = np.asarray(Image.open(label))[:-5]
    Image.fromarray(small).save(label)
    opts = [f'{k}_dataloader.dataset.data_root={root}' for k in ('train', 'val', 'test')]
    r = _dist(
        'dist_train.sh', ADE, '2', '--work-dir', str(tmp_path / 'work'), '--cfg-options', *opts, cwd=tmp_path
    )
    assert r.returncode != 0
    last = _last_line(r)
    assert last.startswith(f'error: label {label} is ') and 'must match' in last, r.stderr[-3000:]
