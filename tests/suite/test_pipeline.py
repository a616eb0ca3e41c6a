"""The pipeline: every backbone x task x seed, resumable cells, failures that stay in their cell, the results
store, and ``mae-dense report --db`` rebuilding the same leaderboard from the store alone.

The fast tests use a stand-in probe (``tests/fake_probe.py``, same command line and result file as
``mae_dense.cli.probe``); the end-to-end ones run the tiny ADE20K/COCO/pretraining configs for 2 iterations.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import probe_cfg, write_yaml

from mae_dense.suite.commands import pipeline_main, report_main
from mae_dense.suite.references import REFERENCES

ROOT = Path(__file__).resolve().parents[2]
ADE = 'configs/demo/upernet_vit-tiny_synthetic_ade20k.py'
COCO = 'configs/demo/mask-rcnn_vit-tiny_synthetic_coco.py'
PROBE = 'configs/demo/linear-probe_vit-tiny_synthetic_ade20k.py'
SHORT = {'train_cfg.max_iters': 2, 'train_cfg.val_interval': 2, 'default_hooks.checkpoint.interval': 2}


def _run_pipeline(path: Path, cwd: Path) -> None:
    """``python -m mae_dense pipeline PATH`` in its own process, as a user runs it."""
    r = subprocess.run(
        [sys.executable, '-m', 'mae_dense', 'pipeline', str(path)], capture_output=True, text=True, cwd=cwd
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def _store(db: Path) -> list[dict]:
    with sqlite3.connect(db) as con:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute('SELECT * FROM cells ORDER BY backbone, task, seed')]


def _tables(md: Path) -> list[str]:
    """The table lines of a leaderboard.md (the figures list may differ in order, not the tables)."""
    return [line for line in md.read_text().splitlines() if line.startswith('|')]


def test_failing_cell_is_recorded_the_others_go_on_and_resume_redoes_only_it(
    tmp_path, fake_probe, monkeypatch, capsys
):
    weights = {}
    for name in ('good', 'bad'):
        weights[name] = tmp_path / f'{name}.pth'
        weights[name].write_bytes(name.encode() * 8)
    cfg = dict(
        work_dir=str(tmp_path / 'work'),
        results_dir=str(tmp_path / 'results'),
        seeds=[0, 1],
        backbones=[
            dict(name='good', checkpoint=str(weights['good'])),
            dict(name='bad', checkpoint=str(weights['bad'])),
            dict(name='scratch', random=True),
        ],
        probe=dict(config=probe_cfg(tmp_path), module='fake_probe'),
        report=dict(title='suite test'),
    )
    path = write_yaml(tmp_path / 'p.yaml', cfg)
    monkeypatch.setenv('FAKE_PROBE_FAIL', 'bad.pth')
    assert pipeline_main([str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('error: 2 of 6 cells failed: bad/probe/seed0 (probe failed: ')
    assert 'the fake probe refuses this backbone' in err[-1] and err[-1].endswith(
        'report: ' + str(tmp_path / 'results/leaderboard.md')
    )
    results = tmp_path / 'results'
    board = json.loads((results / 'leaderboard.json').read_text())
    by = {(r['backbone'], r['metric']): r for r in board['results']}
    assert by[('good', 'mIoU')]['n'] == 2 and by[('good', 'mIoU')]['status'] == 'done'
    assert by[('good', 'mIoU')]['std'] is not None and by[('good', 'mIoU')]['mode'] == 'fast'
    assert by[('bad', 'mIoU')]['status'] == 'failed' and 'refuses' in by[('bad', 'mIoU')]['reason']
    md = (results / 'leaderboard.md').read_text()
    bad_row = next(line for line in md.splitlines() if line.startswith('| bad |'))
    assert 'failed (' in bad_row
    assert (
        'bad / ADE20K linear probe / seed 0, 1: probe failed: ' in md
        and 'ADE20K linear probe mIoU (fast)' in md
    )
    rows = _store(results / 'results.sqlite')
    assert [(r['backbone'], r['seed'], r['status']) for r in rows if r['backbone'] == 'bad'] == [
        ('bad', 0, 'failed'),
        ('bad', 1, 'failed'),
    ]
    good_cell = tmp_path / 'work/good/probe-seed0/cell.json'
    stamp = good_cell.stat().st_mtime_ns

    monkeypatch.delenv('FAKE_PROBE_FAIL')
    assert pipeline_main([str(path)]) == 0
    out = capsys.readouterr().out
    assert '[pipeline] good/probe/seed0: done, skipped' in out and 'bad/probe/seed1: done: mIoU' in out
    assert good_cell.stat().st_mtime_ns == stamp
    rows = _store(results / 'results.sqlite')
    assert len(rows) == 6 and {r['status'] for r in rows} == {'done'}  # the failures were replaced
    sha = __import__('hashlib').sha256(weights['good'].read_bytes()).hexdigest()
    good = [r for r in rows if r['backbone'] == 'good']
    assert {r['checkpoint_sha256'] for r in good} == {sha} and good[0]['git_commit'] and good[0]['date']
    assert json.loads(good[0]['recipe'])['lr'] == 1e-3 and json.loads(good[0]['metrics'])['mIoU'] > 0

    # the report from the store alone has the same tables
    assert (
        report_main(
            [
                '--db',
                str(results / 'results.sqlite'),
                '--out',
                str(tmp_path / 'rebuilt'),
                '--title',
                'suite test',
            ]
        )
        == 0
    )
    assert _tables(tmp_path / 'rebuilt/leaderboard.md') == _tables(results / 'leaderboard.md')
    rebuilt = json.loads((tmp_path / 'rebuilt/leaderboard.json').read_text())
    assert rebuilt['results'] == json.loads((results / 'leaderboard.json').read_text())['results']


def test_store_counts_a_cell_once_across_pipelines(tmp_path, fake_probe, capsys):
    weights = tmp_path / 'w.pth'
    weights.write_bytes(b'weights')
    db = tmp_path / 'shared.sqlite'
    for i, seeds in enumerate(([0], [0, 1])):  # another pipeline, weeks later, same store
        copy = tmp_path / f'copy{i}.pth'  # the same file elsewhere: the same checkpoint
        copy.write_bytes(weights.read_bytes())
        cfg = dict(
            work_dir=str(tmp_path / f'work{i}'),
            results_dir=str(tmp_path / f'results{i}'),
            db=str(db),
            seeds=seeds,
            backbones=[dict(name='mine', checkpoint=str(copy))],
            probe=dict(config=probe_cfg(tmp_path), module='fake_probe'),
        )
        assert pipeline_main([str(write_yaml(tmp_path / f'p{i}.yaml', cfg))]) == 0
    out = capsys.readouterr().out
    assert 'mine/probe/seed0: already in the results store' in out and 'mine/probe/seed1: done: mIoU' in out
    assert not (tmp_path / 'work1/mine/probe-seed0/probe').exists()  # not run again
    assert len(_store(db)) == 2
    board = json.loads((tmp_path / 'results1/leaderboard.json').read_text())
    assert {r['metric']: r['n'] for r in board['results']} == {'mIoU': 2, 'aAcc': 2}


def test_a_cell_is_plain_data_that_runs_after_pickling(tmp_path, fake_probe):
    """Cells are objects a cluster job can carry: pickled and unpickled (as a submission would), the probe
    cell runs from its copy and its record lands in the store."""
    import pickle

    from mae_dense.suite.cell import PretrainCell
    from mae_dense.suite.runner import Suite
    from mae_dense.suite.spec import parse_spec
    from mae_dense.suite.task_cells import ProbeCell

    weights = tmp_path / 'w.pth'
    weights.write_bytes(b'weights')
    raw = dict(
        work_dir=str(tmp_path / 'work'),
        results_dir=str(tmp_path / 'results'),
        seeds=[0, 1],
        backbones=[
            dict(name='mine', checkpoint=str(weights)),
            dict(name='new', pretrain=dict(config='configs/demo/mae_vit-tiny-p16_synthetic.py')),
        ],
        probe=dict(config=probe_cfg(tmp_path), module='fake_probe'),
    )
    cells = Suite(parse_spec(raw, 'p.yaml')).cells()
    assert [(c.key, type(c).__name__, c.after) for c in cells] == [
        ('new/pretrain', 'PretrainCell', ()),
        ('mine/probe/seed0', 'ProbeCell', ()),
        ('new/probe/seed0', 'ProbeCell', ('new/pretrain',)),
        ('mine/probe/seed1', 'ProbeCell', ()),
        ('new/probe/seed1', 'ProbeCell', ('new/pretrain',)),
    ]
    copies = pickle.loads(pickle.dumps(cells))
    assert copies == cells and isinstance(copies[0], PretrainCell) and isinstance(copies[1], ProbeCell)
    copies[1].run(None)
    (row,) = _store(tmp_path / 'results' / 'results.sqlite')
    assert (row['backbone'], row['task'], row['seed'], row['status']) == ('mine', 'probe', 0, 'done')


def test_console_script_and_python_pipeline_config(tmp_path):
    from mae_dense.suite.spec import load_spec

    (tmp_path / 'p.py').write_text(
        f"pipeline = dict(work_dir='w', ade20k=dict(config='{ADE}'), seeds=[0, 1])\n"
    )
    spec = load_spec(tmp_path / 'p.py')
    assert spec.tasks[0].name == 'ade20k' and spec.seeds == [0, 1] and spec.gpus == 1
    mae_dense = str(Path(sys.executable).parent / 'mae-dense')
    r = subprocess.run(
        [mae_dense, 'pipeline', str(tmp_path / 'nope.yaml')], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 1 and r.stderr.strip().endswith('nope.yaml: pipeline config not found')
    r = subprocess.run(
        [mae_dense, 'report', '--db', str(tmp_path / 'none.sqlite')],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and r.stderr.strip() == f'error: {tmp_path}/none.sqlite: no results store there'


def _tiny_mae_checkpoints(tmp_path: Path) -> dict[str, Path]:
    """One tiny MAE (the demo configs' encoder) in four layouts: this project's pretraining output (full
    MAE, ``backbone.`` prefix), the official MAE release (``{'model': encoder}``), mmseg's (beit2mmseg) and
    a MoCo v3 release's (the encoder as ``module.base_encoder``, beside a momentum encoder and heads)."""
    from helpers import randomize_

    from mae_dense.checkpoint import convert_file
    from mae_dense.models.mae import MaskedAutoencoder

    mae = MaskedAutoencoder(
        img_size=64,
        patch_size=16,
        embed_dim=96,
        depth=4,
        num_heads=3,
        decoder_embed_dim=64,
        decoder_depth=1,
        decoder_num_heads=4,
    )
    randomize_(mae, seed=5)
    project = tmp_path / 'ours_epoch_20.pth'
    torch.save({'state_dict': mae.state_dict(), 'meta': {'epoch': 20}}, project)
    official = tmp_path / 'mae_pretrain_vit_tiny.pth'
    convert_file(project, official, 'timm')
    mmseg = tmp_path / 'mae_tiny_mmseg.pth'
    convert_file(project, mmseg, 'mmseg')
    encoder = torch.load(official, weights_only=True)['model']
    moco = {
        f'module.{enc}.{k}': v for enc in ('base_encoder', 'momentum_encoder') for k, v in encoder.items()
    }
    for enc in ('base_encoder', 'momentum_encoder'):  # the projector and the predictor: dropped at load
        moco[f'module.{enc}.head.0.weight'] = torch.randn(32, 96)
    moco['module.predictor.0.weight'] = torch.randn(32, 16)
    mocov3 = tmp_path / 'vit-tiny-300ep.pth.tar'
    torch.save({'epoch': 300, 'arch': 'vit_tiny', 'state_dict': moco, 'optimizer': {}}, mocov3)
    return {'ours': project, 'official': official, 'mmseg': mmseg, 'mocov3': mocov3}


def _tiny_timm_release_files(tmp_path: Path) -> list[dict]:
    """Two timm backbone entries with tiny release files in their families' own layouts: a DINOv2 with
    registers (Meta's keys, patch 14) and a SigLIP (open_clip's layout)."""
    from helpers import timm_release_file

    tiny = dict(embed_dim=48, depth=4, num_heads=3)
    dino = timm_release_file(
        'dinov2_reg', tmp_path / 'dinov2_vits14_reg4_pretrain.pth', seed=6, img_size=56, **tiny
    )[1]
    siglip = timm_release_file(
        'siglip', tmp_path / 'open_clip_model.safetensors', seed=7, img_size=64, **tiny
    )[1]
    return [
        dict(name='dinov2-reg', timm='vit_small_patch14_reg4_dinov2', checkpoint=str(dino),
             timm_kwargs=dict(tiny, img_size=56)),
        dict(name='siglip', timm='vit_base_patch16_siglip_224', checkpoint=str(siglip),
             timm_kwargs=dict(tiny, img_size=64)),
    ]  # fmt: skip


@pytest.mark.slow
def test_every_family_over_ade20k_coco_and_probe(tmp_path):
    """The suite's acceptance run: a value for every backbone x task, in leaderboard.json and the store
    (the real linear probe, fast mode, on the demo's probe config), for an official-MAE-layout file, a
    MoCo v3-layout file of the same encoder, a timm DINOv2 with registers, a timm SigLIP and random init.
    The project, mmseg and other layouts of one encoder load to the same weights (tests/checkpoint)."""
    from mae_dense.data import generate_synthetic_ade20k, generate_synthetic_coco

    ade = generate_synthetic_ade20k(tmp_path / 'ADEChallengeData2016', num_train=4, num_val=2, seed=3)
    coco = generate_synthetic_coco(tmp_path / 'coco', num_train=4, num_val=2, seed=3)
    ade_data = {f'{k}_dataloader.dataset.data_root': str(ade) for k in ('train', 'val', 'test')}
    coco_data = {f'{k}_dataloader.dataset.data_root': f'{coco}/' for k in ('train', 'val', 'test')}
    coco_data.update(
        {f'{k}_evaluator.ann_file': f'{coco}/annotations/instances_val2017.json' for k in ('val', 'test')}
    )
    layouts = _tiny_mae_checkpoints(tmp_path)
    timm_backbones = _tiny_timm_release_files(tmp_path)
    cfg = dict(
        work_dir=str(tmp_path / 'work'),
        results_dir=str(tmp_path / 'results'),
        backbones=[
            *(dict(name=k, checkpoint=str(layouts[k])) for k in ('official', 'mocov3')),
            dict(name='scratch', random=True),
            *timm_backbones,
        ],
        ade20k=dict(config=ADE, ms_flip=False, cfg_options={**ade_data, **SHORT}),
        coco=dict(config=COCO, cfg_options={**coco_data, **SHORT, 'model.test_cfg.rcnn.score_thr': 0.0}),
        probe=dict(
            config=PROBE,
            mode='fast',
            cfg_options={
                'train_dataloader.dataset.crops.dataset.data_root': str(ade),
                'test_dataloader.dataset.data_root': str(ade),
                'probe_cache_root': str(tmp_path / 'probe_cache'),
                'train_cfg.max_iters': 2,
            },
        ),
        qualitative=dict(images=1),
    )
    path = write_yaml(tmp_path / 'p.yaml', cfg)
    _run_pipeline(path, cwd=tmp_path)
    results = tmp_path / 'results'
    board = json.loads((results / 'leaderboard.json').read_text())
    values = {(x['backbone'], x['benchmark'], x['metric']): x['value'] for x in board['results']}
    for backbone in ('official', 'mocov3', 'scratch', 'dinov2-reg', 'siglip'):
        for bench, metric in (
            ('ADE20K', 'mIoU'),
            ('COCO', 'box AP'),
            ('COCO', 'mask AP'),
            ('ADE20K linear probe', 'mIoU'),
        ):
            assert values[(backbone, bench, metric)] is not None, (backbone, bench, metric)
    rows = _store(results / 'results.sqlite')
    assert len(rows) == 15 and {r['status'] for r in rows} == {'done'}
    for row in rows:  # the timm backbones ran as themselves in every task (the shipped configs adapted)
        if row['backbone'] in ('dinov2-reg', 'siglip'):
            model = json.loads(row['recipe'])['model']
            assert (
                model
                == {
                    'dinov2-reg': 'timm vit_small_patch14_reg4_dinov2',
                    'siglip': 'timm vit_base_patch16_siglip_224',
                }[row['backbone']]
            )
    # the two files are one encoder: the same weights fine-tuned with the same seed give the same number
    assert values[('official', 'ADE20K', 'mIoU')] == values[('mocov3', 'ADE20K', 'mIoU')]
    probe = ('ADE20K linear probe', 'mIoU')
    assert values[('mocov3', *probe)] == values[('official', *probe)] != values[('scratch', *probe)]
    coco_rows = [r for r in rows if r['task'] == 'coco']
    assert all(json.loads(r['curves'])['box AP'][0][0] == 2 for r in coco_rows)  # drawn at its real iteration
    assert all(json.loads(r['recipe'])['lr'] == pytest.approx(4e-4) for r in coco_rows)
    with sqlite3.connect(results / 'results.sqlite') as con:
        assert sorted(con.execute("SELECT backbone FROM figures WHERE kind = 'qualitative'")) == [
            ('dinov2-reg',),
            ('mocov3',),
            ('official',),
            ('scratch',),
            ('siglip',),
        ]
    md = (results / 'leaderboard.md').read_text()
    for ref in REFERENCES:  # every published row is in the matrix
        assert f'| published: {ref.label}, {ref.source} | {ref.model} |' in md
    assert report_main(['--db', str(results / 'results.sqlite'), '--out', str(tmp_path / 'rebuilt')]) == 0
    assert _tables(tmp_path / 'rebuilt/leaderboard.md') == _tables(results / 'leaderboard.md')
    for name in (
        'bars_ADE20K.png',
        'bars_COCO.png',
        'curves_coco.png',
        'qualitative_official.png',
        'leaderboard.html',
    ):
        assert (results / name).is_file(), name


@pytest.mark.slow
def test_pretraining_backbone_records_the_lr_its_optimizer_had(tmp_path, fake_probe):
    """A ``pretrain:`` backbone feeds its last checkpoint to the tasks; the recorded lr is the built
    optimizer's (``base_lr x batch / base_batch_size``), not ``base_lr x batch / 256``."""
    from mae_dense.data import generate_synthetic_image_folder

    images = generate_synthetic_image_folder(tmp_path / 'pretrain')
    cfg = dict(
        work_dir=str(tmp_path / 'work'),
        results_dir=str(tmp_path / 'results'),
        backbones=[
            dict(
                name='mae-tiny',
                pretrain=dict(
                    config='configs/demo/mae_vit-tiny-p16_synthetic.py',
                    cfg_options={
                        'train_dataloader.dataset.data_root': str(images),
                        'train_cfg.max_epochs': 2,
                        'optim_wrapper.paramwise_cfg.base_batch_size': 64,
                    },
                ),
            )
        ],
        probe=dict(config=probe_cfg(tmp_path), module='fake_probe'),
    )
    path = write_yaml(tmp_path / 'p.yaml', cfg)
    _run_pipeline(path, cwd=ROOT)
    rows = {r['task']: r for r in _store(tmp_path / 'results/results.sqlite')}
    recipe = json.loads(rows['pretrain']['recipe'])
    assert recipe['effective_batch'] == 16 and recipe['lr'] == pytest.approx(0.06 * 16 / 64)
    ckpt = json.loads((tmp_path / 'work/mae-tiny/pretrain/cell.json').read_text())['checkpoint']
    call = json.loads((tmp_path / 'work/mae-tiny/probe-seed0/probe/fake_probe_call.json').read_text())
    assert f'model.pretrained={ckpt}' in call['argv']
    assert rows['probe']['checkpoint_sha256'] == rows['pretrain']['checkpoint_sha256']
    with sqlite3.connect(tmp_path / 'results/results.sqlite') as con:
        assert [k for (k,) in con.execute('SELECT kind FROM figures')] == ['reconstruction']
    # the training curves also went to TensorBoard
    assert list((tmp_path / 'work/mae-tiny/pretrain/train').glob('*/vis_data/events.out.tfevents.*'))
    assert (
        '| mae-tiny | pretrain | 0 | 1 | 16 | 1 | 16 | 0.015 | 2 ep |'
        in (tmp_path / 'results/leaderboard.md').read_text()
    )


def test_changed_weights_rerun_the_cell_and_keep_the_old_run_aside(tmp_path, fake_probe, capsys):
    weights = tmp_path / 'w.pth'
    weights.write_bytes(b'first weights')
    cfg = dict(
        work_dir=str(tmp_path / 'work'),
        results_dir=str(tmp_path / 'results'),
        backbones=[dict(name='mine', checkpoint=str(weights))],
        probe=dict(config=probe_cfg(tmp_path), module='fake_probe'),
    )
    path = write_yaml(tmp_path / 'p.yaml', cfg)
    assert pipeline_main([str(path)]) == 0
    weights.write_bytes(b'retrained weights')  # same name, same path, other weights
    assert pipeline_main([str(path)]) == 0
    out = capsys.readouterr().out
    assert 'mine/probe/seed0: the weights or the config changed since the last run: old run moved to ' in out
    assert len(list((tmp_path / 'work/mine').glob('probe-seed0.stale-*'))) == 1
    rows = _store(tmp_path / 'results/results.sqlite')
    assert len({r['checkpoint_sha256'] for r in rows}) == 2
    md = (tmp_path / 'results/leaderboard.md').read_text()
    assert sum(line.startswith('| mine @') for line in md.splitlines()) == 2  # one row per checkpoint


@pytest.mark.slow
def test_a_new_benchmark_is_one_table_entry_plus_its_config(tmp_path, monkeypatch):
    """A toy benchmark added as one entry of the table of tasks and one config runs through the spec, the
    cells, the store and the report like the shipped ones; its entry's placement puts a backbone of another
    size (64-d, 8 blocks against the config's 96-d, 4 blocks) into the neck, heads and layer decay."""
    from mae_dense.data import generate_synthetic_ade20k
    from mae_dense.suite.tasks import TASKS, Metric, Task, TestProtocol

    toy = Task(
        name='toyseg',
        benchmark='Toy segmentation',
        kind='finetune',
        weights_key='model.pretrained',
        metrics=(Metric('mIoU', 'test_ss', 'mIoU'), Metric('mAcc', 'test_ss', 'mAcc')),
        column=len(TASKS),
        eval_flags=('--eval', 'mIoU'),
        tests=(TestProtocol('test_ss', (), 'test'),),
        curves={'mIoU': ('mIoU', 1.0)},
        placement=TASKS['ade20k'].placement,  # the same UperNet keys
    )
    monkeypatch.setitem(TASKS, 'toyseg', toy)
    ade = generate_synthetic_ade20k(tmp_path / 'ADEChallengeData2016', num_train=4, num_val=2, seed=3)
    config = tmp_path / 'toyseg_vit-tiny.py'  # the benchmark's config
    config.write_text(
        f'_base_ = {str(ROOT / ADE)!r}\n'
        + ''.join(
            f'{k}_dataloader = dict(dataset=dict(data_root={str(ade)!r}))\n' for k in ('train', 'val', 'test')
        )
        + 'train_cfg = dict(max_iters=2, val_interval=2)\ndefault_hooks = dict(checkpoint=dict(interval=2))\n'
    )
    cfg = dict(
        work_dir=str(tmp_path / 'work'),
        results_dir=str(tmp_path / 'results'),
        backbones=[
            dict(name='scratch', random=True),
            dict(name='narrow', random=True, arch=dict(embed_dim=64, depth=8, num_heads=2, patch_size=16)),
        ],
        toyseg=dict(config=str(config)),
        qualitative=False,
    )
    assert pipeline_main([str(write_yaml(tmp_path / 'p.yaml', cfg))]) == 0
    board = json.loads((tmp_path / 'results' / 'leaderboard.json').read_text())
    rows = {(x['backbone'], x['benchmark'], x['metric']): x for x in board['results']}
    assert set(rows) == {(b, 'Toy segmentation', m) for b in ('scratch', 'narrow') for m in ('mIoU', 'mAcc')}
    assert all(0 <= r['value'] <= 100 and r['task'] == 'toyseg' for r in rows.values())
    cells = {c['backbone']: c for c in _store(tmp_path / 'results' / 'results.sqlite')}
    assert all(c['task'] == 'toyseg' and json.loads(c['curves'])['mIoU'][0][0] == 2 for c in cells.values())
    assert (cells['scratch']['model'], cells['narrow']['model']) == ('ViT 96-d (toy)', 'ViT 64-d (toy)')
    # one protocol (one column), two backbones: the store tells them apart by the size of random weights
    assert cells['scratch']['config_hash'] == cells['narrow']['config_hash']
    assert (cells['scratch']['checkpoint_sha256'], cells['narrow']['checkpoint_sha256']) == (
        'random',
        'random 64d-8b-2h-p16',
    )
    placed = json.loads(cells['narrow']['recipe'])['cfg_options']
    assert placed['model.decode_head.in_channels'] == [64] * 4
    assert placed['model.backbone.out_indices'] == [1, 3, 5, 7]  # the config's [0, 1, 2, 3] of 4 blocks, at 8
    assert placed['optim_wrapper.paramwise_cfg.num_layers'] == placed['model.backbone.depth'] == 8
    assert (
        '| Toy segmentation mIoU | Toy segmentation mAcc |'
        in (tmp_path / 'results/leaderboard.md').read_text()
    )
