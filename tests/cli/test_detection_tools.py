"""The COCO commands end to end on synthetic COCO: a short training run whose loss falls, then
``sh tools/dist_test.sh CONFIG CKPT 1 --eval bbox segm`` with the metrics checked against pycocotools."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from helpers import run_tool as _run

from mae_dense.data import generate_synthetic_coco

ROOT = Path(__file__).resolve().parents[2]
DEMO = 'configs/demo/mask-rcnn_vit-tiny_synthetic_coco.py'
ITERS = 15


def _data_opts(root: Path, loaders=('train', 'val', 'test')) -> list[str]:
    ann = root / 'annotations' / 'instances_val2017.json'
    opts = [f'{split}_dataloader.dataset.data_root={root}/' for split in loaders]
    return opts + [f'{split}_evaluator.ann_file={ann}' for split in ('val', 'test') if split in loaders]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('coco')
    root = generate_synthetic_coco(tmp / 'coco', num_train=8, num_val=4, seed=0)
    opts = [
        *_data_opts(root),
        f'train_cfg.max_iters={ITERS}',
        f'train_cfg.val_interval={ITERS}',
        f'default_hooks.checkpoint.interval={ITERS}',
        'default_hooks.logger.interval=1',
        'randomness.seed=0',
    ]
    args = [sys.executable, str(ROOT / 'tools/train.py'), str(ROOT / DEMO), '--work-dir', str(tmp / 'work')]
    r = _run([*args, '--cfg-options', *opts], cwd=tmp)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp, root


def test_training_loss_is_finite_and_falls(trained):
    tmp, _ = trained
    scalars = next((tmp / 'work').rglob('scalars.json'))
    rows = [json.loads(line) for line in scalars.read_text().splitlines()]
    losses = [r['loss'] for r in rows if 'loss' in r]
    assert len(losses) == ITERS and all(math.isfinite(v) for v in losses)
    assert {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask'} <= set(rows[0])
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.8 * first, losses
    assert (tmp / 'work' / f'iter_{ITERS}.pth').is_file()


def test_dist_test_sh_eval_bbox_segm(trained):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    tmp, root = trained
    out = tmp / 'results'
    args = [
        'sh',
        str(ROOT / 'tools/dist_test.sh'),
        str(ROOT / DEMO),
        str(tmp / 'work' / f'iter_{ITERS}.pth'),
        '1',
        '--eval',
        'bbox',
        'segm',
        '--out',
        str(out),
        '--work-dir',
        str(tmp / 'test_work'),
        '--cfg-options',
        *_data_opts(root, loaders=('test',)),
        # a 15-iteration model scores everything below the default 0.05: keep all its detections
        'model.test_cfg.rcnn.score_thr=0.0',
    ]
    r = _run(args, cwd=tmp)
    assert r.returncode == 0, ' '.join(args) + r.stdout[-3000:] + r.stderr[-3000:]
    metrics = json.loads(next((tmp / 'test_work').rglob('metrics_*.json')).read_text())['metrics']
    for kind in ('bbox', 'segm'):
        keys = [f'coco/{kind}_mAP{s}' for s in ('', '_50', '_75', '_s', '_m', '_l')]
        assert set(keys) <= set(metrics), sorted(metrics)
        assert kind + '_mAP' in r.stdout or f'coco/{kind}_mAP' in r.stdout
        # the printed numbers are pycocotools' on the written result file (CocoMetric rounds to 3 places)
        gt = COCO(str(root / 'annotations' / 'instances_val2017.json'))
        results = json.loads(Path(f'{out}.{kind}.json').read_text())
        assert {d['image_id'] for d in results} <= set(gt.getImgIds()) and results
        ev = COCOeval(gt, gt.loadRes(results), kind)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        for key, stat in zip(keys, ev.stats[:6]):
            assert metrics[key] == pytest.approx(round(float(stat), 3), abs=1e-6), key
