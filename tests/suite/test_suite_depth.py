"""The depth benchmark in the suite: its spec key, its columns (RMSE and AbsRel lower is better) from a probe
result, and a ViT-L placed in the ViT-B protocol as the published ViT-L config."""

from __future__ import annotations

import pytest

from mae_dense.errors import PipelineError
from mae_dense.suite.board import matrix
from mae_dense.suite.outputs import task_metrics
from mae_dense.suite.spec import parse_spec
from mae_dense.suite.tables import leaderboard_records
from mae_dense.suite.tasks import TASKS

DEPTH = 'configs/nyu/linear-depth_mae-base_nyu.py'


def _cell(backbone: str, task: str, metrics: dict) -> dict:
    return dict(backbone=backbone, checkpoint_sha256=f'sha-{backbone}', model='ViT-B', task=task,
                config=f'{task}.py', config_hash=f'hash-{task}', seed=0, status='done', metrics=metrics,
                recipe=dict(world_size=1, lr=5e-3, iterations=6400), versions={}, git_commit='abc', mode='fast')  # fmt: skip


def test_depth_columns_come_from_the_probe_result_with_lower_is_better():
    depth = TASKS['depth']
    probe_result = {'probe': {'metrics': {'rmse': 0.4171, 'abs_rel': 0.121, 'd1': 0.8525, 'silog': 9.0}}}
    metrics, missing = task_metrics(depth, probe_result)
    assert metrics == {'RMSE': 0.4171, 'AbsRel': 0.121, 'δ1': 85.25} and not missing
    cells = [_cell('mae', 'depth', metrics), _cell('mae', 'probe', {'mIoU': 30.0})]
    headers = matrix(leaderboard_records(cells), references=()).headers
    assert headers == [
        'backbone',
        'model',
        'ADE20K linear probe mIoU (fast)',
        'NYU Depth v2 RMSE (lower is better) (fast)',
        'NYU Depth v2 AbsRel (lower is better) (fast)',
        'NYU Depth v2 δ1 (fast)',
    ]


def test_the_spec_takes_a_depth_entry_as_a_probe():
    spec = parse_spec(dict(depth=dict(config=DEPTH, mode='augmented')), 'p.yaml')
    (task,) = spec.tasks
    assert (task.name, task.mode, task.gpus, task.module) == ('depth', 'augmented', 1, 'mae_dense.cli.probe')


def test_vit_l_placed_in_the_vit_b_protocol_is_the_published_vit_l_config():
    """Width, depth, heads and the read block; the 4-layer configs differ: DINOv2 reads ViT-L's blocks
    4, 11, 17, 23, not the evenly placed 5, 11, 17, 23."""
    from mae_dense.models.archs import ARCHS
    from mae_dense.suite.recipe import RunConfig
    from mae_dense.suite.spec import resolve_config
    from mae_dense.suite.tasks import placement_fit

    fit = placement_fit(TASKS['depth'], ARCHS['large'])
    for base, large, differ in (
        ('linear-depth_mae-base_nyu', 'linear-depth_mae-large_nyu', set()),
        (
            'linear-depth_mae-base_4layers_nyu',
            'linear-depth_mae-large_4layers_nyu',
            {'model.backbone.layers'},
        ),
    ):
        placed = RunConfig.read(resolve_config(f'configs/nyu/{base}.py', 'b'), {}, fit=fit)
        published = RunConfig.read(resolve_config(f'configs/nyu/{large}.py', 'l'), {})
        keys = set(placed.options) - differ
        assert {'model.backbone.embed_dim', 'model.backbone.layers'} <= set(placed.options)
        assert {k: placed.get(k) for k in keys} == {k: published.get(k) for k in keys}
        assert placed.model == published.model == 'ViT-L'
    assert placed.get('model.backbone.layers') == [5, 11, 17, 23]
    assert published.get('model.backbone.layers') == [4, 11, 17, 23]


def test_a_depth_entry_with_several_configs_is_one_protocol_each(tmp_path):
    """``depth: {config: [lin. 1, lin. 4, DPT]}``: one task spec, cell and work dir per config, and on the
    leaderboard one column group per protocol (the read layers and the head differ)."""
    import sys

    from mae_dense.suite.cell import Context
    from mae_dense.suite.runner import pipeline_cells

    configs = [
        f'configs/nyu/{n}.py' for n in ('linear-depth_mae-base_nyu', 'linear-depth_mae-base_4layers_nyu')
    ]
    raw = dict(work_dir=str(tmp_path), backbones=[dict(name='r', random=True)], depth=dict(config=configs))
    spec = parse_spec(raw, 'p.yaml')
    assert [t.label for t in spec.tasks] == [
        'depth.linear-depth_mae-base_nyu',
        'depth.linear-depth_mae-base_4layers_nyu',
    ]
    cells = pipeline_cells(spec, Context.of(spec, sys.executable))
    assert [c.key for c in cells] == [f'r/{t.label}/seed0' for t in spec.tasks]
    assert len({c.work for c in cells}) == 2
    records = []
    for t, layers in zip(spec.tasks, ('last block', 'blocks 1/4, 1/2, 3/4, 1 of depth')):
        cell = _cell('r', 'depth', {'RMSE': 0.5, 'AbsRel': 0.1, 'δ1': 80.0})
        protocol = dict(task='depth', frozen=True, head='LinearDepthBinsHead', layers=layers, input='416x544',
                        ms_flip=False, schedule='38400 it')  # fmt: skip
        records.append(dict(cell, config=t.config, config_hash=t.label, card=dict(protocol=protocol)))
    headers = matrix(leaderboard_records(records), references=()).headers
    assert sum(h.startswith('NYU Depth v2 RMSE') for h in headers) == 2, headers
    with pytest.raises(PipelineError, match='two configs of one name'):
        parse_spec(dict(raw, depth=dict(config=[configs[0], configs[0]])), 'p.yaml')
