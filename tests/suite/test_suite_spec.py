"""Pipeline configs: many backbones, the single-backbone form, and one-line errors before anything runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import write_yaml

from mae_dense.config_files import CONFIG_ROOT
from mae_dense.errors import PipelineError
from mae_dense.suite.commands import pipeline_main
from mae_dense.suite.spec import load_spec, parse_spec, read_config_file

ADE = 'configs/demo/upernet_vit-tiny_synthetic_ade20k.py'
PRETRAIN = 'configs/demo/mae_vit-tiny-p16_synthetic.py'


def _error(cfg: dict, tmp_path: Path) -> str:
    with pytest.raises(PipelineError) as exc:
        load_spec(write_yaml(tmp_path / 'p.yaml', cfg))
    message = str(exc.value)
    assert '\n' not in message
    return message


def test_backbones_list_every_kind(tmp_path):
    ckpt = tmp_path / 'w.pth'
    ckpt.write_bytes(b'x')
    spec = parse_spec(
        dict(
            backbones=[
                dict(name='mine', pretrain=dict(config=PRETRAIN, cfg_options={'train_cfg.max_epochs': 1})),
                dict(name='official', checkpoint=str(ckpt)),
                dict(name='url', checkpoint='https://example.org/mae_pretrain_vit_base.pth'),
                dict(name='scratch', random=True),
            ],
            ade20k=dict(config=ADE),
            seeds=[0, 1],
            gpus=2,
        ),
        'p.yaml',
    )
    assert [(b.name, b.kind) for b in spec.backbones] == [
        ('mine', 'pretrain'),
        ('official', 'checkpoint'),
        ('url', 'checkpoint'),
        ('scratch', 'random'),
    ]
    assert spec.backbones[0].pretrain.gpus == 2 and spec.backbones[0].pretrain.cfg_options == {
        'train_cfg.max_epochs': 1
    }
    assert spec.backbones[1].checkpoint == str(ckpt.resolve())
    assert (
        spec.tasks[0].name == 'ade20k'
        and spec.tasks[0].gpus == 2
        and spec.tasks[0].switches == {'ms_flip': True}
    )
    assert spec.db == Path('results/results.sqlite') and spec.seeds == [0, 1]


def test_single_backbone_forms_keep_working(tmp_path):
    trained = parse_spec(dict(pretrain=dict(config=PRETRAIN), ade20k=dict(config=ADE)), 'p.yaml')
    assert [(b.name, b.kind) for b in trained.backbones] == [('mae_vit-tiny-p16_synthetic', 'pretrain')]
    ckpt = tmp_path / 'mae_pretrain_vit_base.pth'
    ckpt.write_bytes(b'x')
    taken = parse_spec(dict(pretrain=dict(checkpoint=str(ckpt)), ade20k=dict(config=ADE)), 'p.yaml')
    assert [(b.name, b.kind, b.checkpoint) for b in taken.backbones] == [
        ('mae_pretrain_vit_base', 'checkpoint', str(ckpt.resolve()))
    ]
    default = parse_spec(dict(ade20k=dict(config=ADE), db='store.sqlite'), 'p.yaml')
    assert [b.kind for b in default.backbones] == ['config'] and default.db == Path('store.sqlite')


def test_shipped_configs_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = parse_spec(dict(ade20k=dict(config=ADE)), 'p.yaml')
    assert spec.tasks[0].config == str(CONFIG_ROOT / 'demo/upernet_vit-tiny_synthetic_ade20k.py')


def test_shipped_config_names_work_as_they_do_for_the_tools(tmp_path, monkeypatch):
    from mae_dense.cli.configs import resolve_config as tool_resolve

    monkeypatch.chdir(tmp_path)
    name = 'upernet_vit-tiny_synthetic_ade20k'
    spec = parse_spec(dict(ade20k=dict(config=name), probe=dict(config=name + '.py')), 'p.yaml')
    expected = str(CONFIG_ROOT / 'demo/upernet_vit-tiny_synthetic_ade20k.py')
    assert [t.config for t in spec.tasks] == [expected, expected] == [tool_resolve(name)] * 2
    message = _error({'ade20k': {'config': name[:-1]}}, tmp_path)
    expected = f'p.yaml: ade20k: config {name[:-1]}: file not found (closest shipped configs: {name}, '
    assert expected in message


@pytest.mark.parametrize(
    ('cfg', 'expected'),
    [
        ({'ade20kk': {'config': ADE}}, "p.yaml: unknown key 'ade20kk'; did you mean 'ade20k'?"),
        ({'backbone': [], 'ade20k': {'config': ADE}}, "unknown key 'backbone'; did you mean 'backbones'?"),
        (
            {'backbones': [{'name': 'a', 'chekpoint': 'x.pth'}], 'ade20k': {'config': ADE}},
            "p.yaml: backbones[0]: unknown key 'chekpoint'; did you mean 'checkpoint'?",
        ),
        (
            {'ade20k': {'config': ADE, 'cfg_option': {}}},
            "p.yaml: ade20k: unknown key 'cfg_option'; did you mean 'cfg_options'?",
        ),
        (
            {'ade20k': {'config': ADE}, 'probe': {'config': ADE, 'mode': 'fastest'}},
            'probe.mode: expected one of fast, augmented',
        ),
        (
            {'backbones': [{'name': 'a', 'random': True, 'checkpoint': 'x.pth'}], 'ade20k': {'config': ADE}},
            'backbones[0] (a): needs exactly one of checkpoint',
        ),
        (
            {
                'backbones': [{'name': 'a', 'random': True}, {'name': 'a', 'random': True}],
                'ade20k': {'config': ADE},
            },
            "backbones[1]: name 'a' is used twice",
        ),
        ({'ade20k': {}}, 'p.yaml: ade20k needs a config'),
        ({'ade20k': {'config': 'nope.py'}}, 'p.yaml: ade20k: config nope.py: file not found'),
        ({'ade20k': {'config': ADE}, 'launcher': 'slurm'}, 'launcher slurm needs slurm.partition'),
        ({'ade20k': {'config': ADE}, 'seeds': [0, 0]}, 'seeds must be a list of distinct integers'),
        (
            {'backbones': [{'name': 'a', 'random': True, 'arch': 'larg'}], 'ade20k': {'config': ADE}},
            "backbones[0] (a): arch 'larg': expected one of base, large, huge or a mapping",
        ),
        (
            {
                'backbones': [{'name': 'a', 'random': True, 'arch': {'embed_dim': 64}}],
                'ade20k': {'config': ADE},
            },
            'backbones[0] (a).arch: needs embed_dim, depth, num_heads, patch_size, got embed_dim',
        ),
    ],
)
def test_bad_pipeline_config_one_line(tmp_path, monkeypatch, cfg, expected):
    monkeypatch.delenv('PARTITION', raising=False)
    assert expected in _error(cfg, tmp_path)


def test_missing_checkpoint_stops_before_anything_runs(tmp_path, capsys):
    work = tmp_path / 'work'
    cfg = dict(
        work_dir=str(work),
        backbones=[
            dict(name='scratch', random=True),
            dict(name='official', checkpoint=str(tmp_path / 'gone.pth')),
        ],
        ade20k=dict(config=ADE),
    )
    rc = pipeline_main(
        [str(write_yaml(tmp_path / 'p.yaml', cfg)), '--results-dir', str(tmp_path / 'results')]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err == [
        f'error: {tmp_path}/p.yaml: backbones[1] (official): checkpoint {tmp_path}/gone.pth: file not found'
    ]
    assert not work.exists() and not (tmp_path / 'results').exists()  # checked before anything ran


def test_git_commit_is_unknown_outside_its_checkout(tmp_path, monkeypatch):
    from mae_dense.suite import recipe

    assert len(recipe.git_commit()) == 40  # this checkout
    monkeypatch.setattr(recipe, 'PACKAGE_DIR', tmp_path / 'site-packages' / 'mae_dense')
    recipe.PACKAGE_DIR.mkdir(parents=True)
    assert recipe.git_commit() == 'unknown'  # an installed package, no repository around it
    git = ['git', '-C', str(tmp_path), '-c', 'user.name=t', '-c', 'user.email=t@t']
    subprocess.run([*git, 'init', '-q'], check=True)
    subprocess.run([*git, 'commit', '-q', '--allow-empty', '-m', 'other project'], check=True)
    assert recipe.git_commit() == 'unknown'  # a virtualenv inside some other repository is not its commit


def test_a_config_that_raises_without_a_message_is_one_line(tmp_path, capsys):
    """``assert False`` in a config: an exception with an empty message, still one line (pipeline and tool)."""
    from mae_dense.cli.train import main as train_main
    from mae_dense.suite.recipe import read_config

    config = tmp_path / 'broken.py'
    config.write_text('assert False\n')
    with pytest.raises(PipelineError) as exc:
        read_config(str(config))
    assert str(exc.value) == f'{config}: cannot read the config (AssertionError)'
    assert train_main([str(config), '--work-dir', str(tmp_path / 'work')]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f'error: {config}: cannot read the config (AssertionError)'
    ]
    with pytest.raises(PipelineError) as exc:  # the same file as a Python pipeline config
        read_config_file(config)
    assert str(exc.value) == f'{config}: cannot read the config (AssertionError)'


@pytest.mark.parametrize(
    'config',
    [
        'ade20k/upernet_mae-large_fp16_512x512_160k_ade20k_ms.py',  # children inherit the bases' backends
        'coco/mask-rcnn_vit-l-mae_lsj-100e_coco.py',
        'pretrain/mae_vit-base-p16_8xb512-amp-coslr-800e_in1k.py',
    ],
)
def test_full_configs_write_tensorboard_beside_the_json_logs(config):
    from mae_dense.suite.recipe import read_config

    cfg = read_config(str(CONFIG_ROOT / config))
    assert [b['type'] for b in cfg.visualizer.vis_backends] == ['LocalVisBackend', 'TensorboardVisBackend']
    if config.startswith('coco/'):  # validation metrics at their iteration, not at epoch 0
        assert cfg.default_hooks.logger.log_metric_by_epoch is False


# (task, the ViT-B config, the ViT-L config with the published recipe of that size)
SIZES = [
    (
        'ade20k',
        'upernet_mae-base_fp16_8x2_512x512_160k_ade20k',
        'upernet_mae-large_fp16_8x2_512x512_160k_ade20k',
    ),
    ('coco', 'mask-rcnn_vit-b-mae_lsj-100e_coco', 'mask-rcnn_vit-l-mae_lsj-100e_coco'),
    (
        'probe',
        'linear-probe_mae-base_1x16_512x512_40k_ade20k',
        'linear-probe_mae-large_1x16_512x512_40k_ade20k',
    ),
    (
        'probe',
        'linear-probe_mae-base_4layers_1x16_512x512_40k_ade20k',
        'linear-probe_mae-large_4layers_1x16_512x512_40k_ade20k',
    ),
]


@pytest.mark.parametrize(('task', 'base', 'large'), SIZES)
def test_a_task_places_another_size_as_its_published_config_of_that_size(task, base, large):
    """``arch: large`` on a ViT-B config sets every width, depth, head and output key to the ViT-L config's
    values (neck and head channels, out_indices, the layer decay's num_layers), and the model builds."""
    from mae_dense.models.archs import ARCHS
    from mae_dense.suite.recipe import RunConfig
    from mae_dense.suite.spec import resolve_config
    from mae_dense.suite.tasks import TASKS, placement_fit

    base, large = resolve_config(base, 'base'), resolve_config(large, 'large')
    placed = RunConfig.read(base, {}, fit=placement_fit(TASKS[task], ARCHS['large']))
    published = RunConfig.read(large, {})
    fitted = placed.options
    assert {'model.backbone.embed_dim', 'model.backbone.depth'} <= set(fitted)
    assert {k: placed.get(k) for k in fitted} == {k: published.get(k) for k in fitted}
    assert placed.model == published.model == 'ViT-L'
    assert placed.hash == RunConfig.read(base, {}).hash  # one protocol: ViT-B and ViT-L in one column


def test_an_arch_for_a_task_that_cannot_place_it_is_one_line(tmp_path, monkeypatch):
    import dataclasses

    from mae_dense.suite.tasks import TASKS

    monkeypatch.setitem(TASKS, 'coco', dataclasses.replace(TASKS['coco'], placement=None))
    cfg = {'backbones': [{'name': 'big', 'random': True, 'arch': 'large'}], 'coco': {'config': ADE}}
    assert _error(cfg, tmp_path).endswith(
        'p.yaml: backbone big has arch ViT-L, but task coco cannot place another size (its table entry has '
        'no placement): drop arch or give a config of that size'
    )


def test_a_size_too_shallow_for_the_output_blocks_is_one_line():
    from mae_dense.models.archs import Arch
    from mae_dense.suite.recipe import RunConfig
    from mae_dense.suite.spec import resolve_config
    from mae_dense.suite.tasks import TASKS, placement_fit

    shallow = Arch('ViT 64-d', 'ViT 64-d/16', patch_size=16, embed_dim=64, depth=2, num_heads=2)
    with pytest.raises(ValueError) as exc:
        RunConfig.read(resolve_config(ADE, 'ade20k'), {}, fit=placement_fit(TASKS['ade20k'], shallow))
    assert str(exc.value) == 'model.backbone.out_indices: 4 output blocks do not fit ViT 64-d (2 blocks)'
