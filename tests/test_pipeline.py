"""The pipeline command: stages, resume, failure handling, the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mae_dense.cli.report import REFERENCES
from mae_dense.data import generate_synthetic_ade20k

ROOT = Path(__file__).resolve().parents[1]
ADE = 'configs/demo/upernet_vit-tiny_synthetic_ade20k.py'


def _pipeline(path: Path, results: Path):
    return subprocess.run(
        [sys.executable, str(ROOT / 'tools/pipeline.py'), str(path), '--results-dir', str(results)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('pipeline')
    root = generate_synthetic_ade20k(tmp / 'ADEChallengeData2016', num_train=4, num_val=2, seed=2)
    data = {f'{k}_dataloader.dataset.data_root': str(root) for k in ('train', 'val', 'test')}
    cfg = dict(
        work_dir=str(tmp / 'work'),
        seeds=[0],
        ade20k=dict(
            config=ADE,
            cfg_options={
                **data,
                'train_cfg.max_iters': 2,
                'train_cfg.val_interval': 2,
                'default_hooks.checkpoint.interval': 2,
            },
        ),
        coco=dict(config=str(tmp / 'missing_config.py')),  # fails: the ADE20K results must survive
        report=dict(title='pipeline test'),
    )
    path = tmp / 'pipeline.yaml'
    path.write_text(yaml.safe_dump(cfg))
    first = _pipeline(path, tmp / 'results')
    return tmp, path, first


def test_failing_stage_stops_with_one_line_and_keeps_results(finished):
    tmp, _, first = finished
    assert first.returncode == 1
    last = first.stderr.strip().splitlines()[-1]
    assert last.startswith('error: stage coco failed') and 'missing_config.py' in last
    assert 'finished stages kept: ade20k' in last
    record = json.loads((tmp / 'work' / 'ade20k' / 'stage.json').read_text())
    assert record['status'] == 'done' and 'mIoU' in record['results']['single_scale']
    assert 'mIoU' in record['results']['ms_flip']
    recipe = record['recipe']
    assert recipe['per_gpu_batch'] == 4 and recipe['effective_batch'] == 4 and recipe['iterations'] == 2
    assert recipe['world_size'] == 1 and recipe['seed'] == 0 and len(recipe['config_hash']) == 16
    assert {'torch', 'mmcv', 'mmsegmentation', 'mmdet'} <= set(recipe['versions'])


def test_resume_skips_finished_stages_and_reports(finished):
    tmp, path, _ = finished
    cfg = yaml.safe_load(path.read_text())
    del cfg['coco']
    path.write_text(yaml.safe_dump(cfg))
    stamp = (tmp / 'work' / 'ade20k' / 'stage.json').stat().st_mtime
    second = _pipeline(path, tmp / 'results')
    assert second.returncode == 0, second.stderr[-2000:]
    assert '[pipeline] ade20k: done, skipped' in second.stdout
    assert (tmp / 'work' / 'ade20k' / 'stage.json').stat().st_mtime == stamp
    md = (tmp / 'results' / 'leaderboard.md').read_text()
    for bench, model, metric, value, source in REFERENCES:  # every reference row is in the report
        assert f'| {bench} | {model} | {metric} | {value:.2f} | {source} |' in md
    assert 'ViT 96-d (toy)' in md and 'mIoU ms+flip' in md
    board = json.loads((tmp / 'results' / 'leaderboard.json').read_text())
    assert len(board['references']) == len(REFERENCES) and board['runs'][0]['benchmark'] == 'ADE20K'
    assert 'metrics_vs_iter.png' in board['plots'] and (tmp / 'results' / 'metrics_vs_iter.png').is_file()


def test_bad_pipeline_config_one_line(tmp_path):
    (tmp_path / 'p.yaml').write_text('ade20k: {}\n')
    r = _pipeline(tmp_path / 'p.yaml', tmp_path / 'r')
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].endswith('ade20k needs a config')


@pytest.mark.slow
def test_pipeline_end_to_end_pretrain_ade20k_coco(tmp_path):
    """pretrain -> ADE20K (ss + ms+flip) -> COCO -> report, all on synthetic data at tiny scale."""
    from mae_dense.data import generate_synthetic_coco, generate_synthetic_image_folder

    ade = generate_synthetic_ade20k(tmp_path / 'ADEChallengeData2016', num_train=4, num_val=2, seed=3)
    coco = generate_synthetic_coco(tmp_path / 'coco', num_train=4, num_val=2, seed=3)
    images = generate_synthetic_image_folder(tmp_path / 'pretrain')
    ade_data = {f'{k}_dataloader.dataset.data_root': str(ade) for k in ('train', 'val', 'test')}
    coco_data = {f'{k}_dataloader.dataset.data_root': f'{coco}/' for k in ('train', 'val', 'test')}
    coco_data.update(
        {f'{k}_evaluator.ann_file': f'{coco}/annotations/instances_val2017.json' for k in ('val', 'test')}
    )
    cfg = dict(
        work_dir=str(tmp_path / 'work'),
        seeds=[0],
        pretrain=dict(
            config='configs/demo/mae_vit-tiny-p16_synthetic.py',
            cfg_options={'train_dataloader.dataset.data_root': str(images), 'train_cfg.max_epochs': 2},
        ),
        ade20k=dict(
            config=ADE,
            cfg_options={
                **ade_data,
                'train_cfg.max_iters': 2,
                'train_cfg.val_interval': 2,
                'default_hooks.checkpoint.interval': 2,
            },
        ),
        coco=dict(
            config='configs/demo/mask-rcnn_vit-tiny_synthetic_coco.py',
            cfg_options={
                **coco_data,
                'train_cfg.max_iters': 2,
                'train_cfg.val_interval': 2,
                'default_hooks.checkpoint.interval': 2,
                'model.test_cfg.rcnn.score_thr': 0.0,
            },
        ),
    )
    path = tmp_path / 'pipeline.yaml'
    path.write_text(yaml.safe_dump(cfg))
    r = _pipeline(path, tmp_path / 'results')
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    pre = json.loads((tmp_path / 'work' / 'pretrain' / 'stage.json').read_text())
    ade_rec = json.loads((tmp_path / 'work' / 'ade20k' / 'stage.json').read_text())
    coco_rec = json.loads((tmp_path / 'work' / 'coco' / 'stage.json').read_text())
    assert ade_rec['pretrained'] == pre['checkpoint'] == coco_rec['pretrained']  # one pretraining feeds both
    assert 'coco/bbox_mAP' in coco_rec['results']['single_scale']
    md = (tmp_path / 'results' / 'leaderboard.md').read_text()
    assert '| COCO | ViT 96-d (toy) | box AP |' in md and '| pretrain | 0 | 1 | 16 |' in md


def test_python_pipeline_config_and_console_script(tmp_path):
    from mae_dense.cli.pipeline import load_pipeline_config

    (tmp_path / 'p.py').write_text(
        "pipeline = dict(work_dir='w', ade20k=dict(config='c.py'), seeds=[0, 1])\n"
    )
    cfg = load_pipeline_config(tmp_path / 'p.py')
    assert cfg['ade20k'] == {'config': 'c.py'} and cfg['seeds'] == [0, 1] and cfg['gpus'] == 1
    r = subprocess.run(
        [str(Path(sys.executable).parent / 'mae-dense'), 'pipeline', str(tmp_path / 'nope.yaml')],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and r.stderr.strip().endswith('nope.yaml: pipeline config not found')
