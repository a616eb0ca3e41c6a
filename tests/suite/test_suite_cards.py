"""Protocol cards: derived from the table of tasks and the effective configs, stored with every cell, and the
leaderboard's grouping by protocol (two protocols never share a column; a published row under another
protocol stands with the difference named); the store's schema migration; the FLOP count of the estimate
against fvcore."""

from __future__ import annotations

import json
import sqlite3

import pytest
import torch

from mae_dense.errors import PipelineError
from mae_dense.suite.board import matrix
from mae_dense.suite.cards import Protocol, card_of
from mae_dense.suite.recipe import RunConfig
from mae_dense.suite.references import Published
from mae_dense.suite.store import SCHEMA_VERSION, ResultStore
from mae_dense.suite.tables import leaderboard_records
from mae_dense.suite.tasks import TASKS, placement_fit

ADE_B = 'configs/ade20k/upernet_mae-base_fp16_8x2_512x512_160k_ade20k.py'
ADE_L = 'configs/ade20k/upernet_mae-large_fp16_8x2_512x512_160k_ade20k.py'
COCO_B = 'configs/coco/mask-rcnn_vit-b-mae_lsj-100e_coco.py'


def test_cards_come_from_the_task_table_and_the_effective_config():
    """ViT-B and ViT-L configs (and ViT-L placed into the ViT-B config) are one protocol: layers are
    relative to the depth; COCO's SimpleFPN on the last block, windows added at transfer, is another."""
    from mae_dense.models.archs import ARCHS

    ade = TASKS['ade20k']
    base = card_of(ade, RunConfig.read(ADE_B, {}).cfg, None)
    large = card_of(ade, RunConfig.read(ADE_L, {}).cfg, None)
    placed = RunConfig.read(ADE_B, {}, None, placement_fit(ade, ARCHS['large']))
    assert placed.cfg.model.backbone.out_indices == [7, 11, 15, 23]
    assert (
        base['protocol']
        == large['protocol']
        == card_of(ade, placed.cfg, None)['protocol']
        == dict(
            task='ade20k',
            frozen=False,
            head='UPerHead+Feature2Pyramid',
            layers='blocks 1/3, 1/2, 2/3, 1 of depth',
            input='512x512',
            ms_flip=False,
            schedule='160000 it',
        )
    )
    assert (base['source'], base['patch_size'], base['lr']) == ('project ViT', 16, 1e-4)
    assert base['rel_pos'].startswith('relative position bias') and base['lr_searched'].startswith(
        'not searched'
    )
    coco = card_of(TASKS['coco'], RunConfig.read(COCO_B, {}).cfg, None)
    assert (coco['protocol']['layers'], coco['protocol']['input'], coco['windows']) == (
        'last block',
        '1024x1024',
        'windows 14 with global blocks',
    )

    class Timm:  # a timm backbone entry: the card names it and adds nothing at transfer
        timm, timm_kwargs = 'vit_base_patch14_reg4_dinov2', {'depth': 4}

    card = card_of(ade, RunConfig.read(ADE_B, {}).cfg, Timm)
    assert (card['source'], card['timm_kwargs'], card['rel_pos']) == (
        'timm vit_base_patch14_reg4_dinov2',
        {'depth': 4},
        'none (timm model as released)',
    )


def _protocol(**kw) -> dict:
    p = dict(
        task='ade20k',
        frozen=False,
        head='UPerHead+Feature2Pyramid',
        layers='blocks 1/3, 1/2, 2/3, 1 of depth',
        input='512x512',
        ms_flip=False,
        schedule='160000 it',
    )
    return {**p, **kw}


def _cell(backbone: str, seed: int, miou: float, chash: str, **protocol) -> dict:
    card = dict(protocol=_protocol(**protocol), source='project ViT', patch_size=16, rel_pos='r', windows='w')
    card.update(mode=None, lr=1e-4, lr_searched='not searched (the config lr)', sweep=None)
    return dict(
        backbone=backbone,
        checkpoint_sha256=f'sha-{backbone}',
        model='ViT-B',
        task='ade20k',
        config='ade.py',
        config_hash=chash,
        seed=seed,
        status='done',
        metrics={'mIoU': miou, 'mIoU ms+flip': miou + 1, 'aAcc': 80.0},
        card=card,
        recipe={},
        versions={},
        git_commit='abc',
    )


def test_leaderboard_groups_by_protocol_and_names_a_published_rows_difference(tmp_path):
    store = ResultStore(tmp_path / 'r.sqlite')
    # two backbones, two config hashes (e.g. ViT-B and ViT-L configs), one protocol: one column
    store.add(_cell('vit-b', 0, 48.0, 'hash-b'))
    store.add(_cell('vit-l', 0, 53.0, 'hash-l'))
    # a shorter schedule is another protocol: its own column, never ranked with the 160k ones
    store.add(_cell('vit-b', 0, 45.0, 'hash-short', schedule='80000 it'))
    cells = store.cells()
    assert cells[0]['card']['protocol']['schedule'] == '160000 it'  # the card is in the store
    records = leaderboard_records(cells)
    rec = next(r for r in records if r['backbone'] == 'vit-l' and r['metric'] == 'mIoU ms+flip')
    assert rec['protocol'] == _protocol(ms_flip=True) and rec['card']['lr'] == 1e-4
    refs = (
        Published('ADE20K', 'ViT-B', 'mIoU', 48.13, 'same protocol', 'MAE', Protocol(**_protocol())),
        Published(
            'ADE20K', 'ViT-L', 'mIoU', 53.6, 'other protocol', 'MAE', Protocol(**_protocol(input='640x640'))
        ),
    )
    board = matrix(records, references=refs)
    h = board.headers
    assert h[2:] == [
        'ADE20K mIoU [P1]',
        'ADE20K aAcc [P1]',
        'ADE20K mIoU ms+flip [P2]',
        'ADE20K mIoU [P3]',
        'ADE20K aAcc [P3]',
        'ADE20K mIoU ms+flip [P4]',
    ]
    rows = {r[0]: r for r in board.rows}
    assert (rows['vit-b'][2], rows['vit-l'][2]) == ('48.00', '53.00')  # one column: one protocol
    assert (rows['vit-b'][5], rows['vit-l'][5]) == ('45.00', '')  # the 80k run stands apart
    assert rows['published: MAE, same protocol'][2] == '48.13'  # beside ours, no note
    other = rows['published: MAE, other protocol'][2]
    assert other.startswith('53.60 (') and board.notes[int(other[7:-1]) - 1] == (
        'other protocol (MAE): another protocol: input: 640x640 vs 512x512'
    )
    assert board.protocols[0] == (
        'P1 (ADE20K mIoU [P1], ADE20K aAcc [P1]): ade20k: fine-tuned, UPerHead+Feature2Pyramid on blocks '
        '1/3, 1/2, 2/3, 1 of depth, input 512x512, single scale, 160000 it'
    )
    assert (
        board.protocols[2].startswith('P3 (ADE20K mIoU [P3], ADE20K aAcc [P3]): ')
        and '80000 it' in board.protocols[2]
    )


def test_an_old_store_is_migrated_and_a_newer_one_refused(tmp_path):
    """A store written before cards (no card column, user_version 0) opens with the column added, its cells
    with an empty card; a store of a newer schema is refused in one line."""
    old = tmp_path / 'old.sqlite'
    with sqlite3.connect(old) as db:
        db.execute(
            'CREATE TABLE cells (id INTEGER PRIMARY KEY, backbone TEXT NOT NULL, checkpoint_sha256 TEXT NOT '
            'NULL, checkpoint TEXT, model TEXT, task TEXT NOT NULL, config TEXT, config_hash TEXT NOT NULL, '
            "seed INTEGER NOT NULL, status TEXT NOT NULL, reason TEXT, mode TEXT, metrics TEXT NOT NULL DEFAULT '{}', "
            "missing TEXT NOT NULL DEFAULT '{}', recipe TEXT NOT NULL DEFAULT '{}', curves TEXT NOT NULL DEFAULT "
            "'{}', versions TEXT NOT NULL DEFAULT '{}', git_commit TEXT, date TEXT NOT NULL, pipeline TEXT, "
            'work_dir TEXT, UNIQUE (checkpoint_sha256, task, config_hash, seed))'
        )
        db.execute(
            'INSERT INTO cells (backbone, checkpoint_sha256, task, config_hash, seed, status, metrics, date) '
            "VALUES ('old', 'sha', 'ade20k', 'h', 0, 'done', ?, '2026-01-01')",
            (json.dumps({'mIoU': 40.0}),),
        )
    store = ResultStore(old)
    (cell,) = store.cells()
    assert cell['card'] == {} and cell['metrics'] == {'mIoU': 40.0}
    with sqlite3.connect(old) as db:
        assert db.execute('PRAGMA user_version').fetchone()[0] == SCHEMA_VERSION == 1
    assert store.add(_cell('new', 0, 48.0, 'h2'))  # a carded cell beside the old one
    board = matrix(leaderboard_records(store.cells()), references=())
    assert [r[0] for r in board.rows] == ['old', 'new']
    with sqlite3.connect(old) as db:
        db.execute('PRAGMA user_version = 7')
    with pytest.raises(PipelineError, match='schema 7 is newer than this mae-dense'):
        ResultStore(old)


@pytest.mark.parametrize(
    'mode, extra', [('seg', {}), ('det', dict(window_size=2, global_blocks=(1, 3))), ('mae', {})]
)
def test_estimates_backbone_flops_match_fvcore(mode, extra):
    """The dry run's analytic count against fvcore (the project's FLOP counter) on the real ViT: within 2%
    (fvcore also counts LayerNorms and the decomposed relative positions, which the estimate leaves out)."""
    from mae_dense.cli.flops import _count
    from mae_dense.models.vit import VisionTransformer
    from mae_dense.suite.estimate import backbone_macs, project_shape

    cfg = dict(mode=mode, img_size=64, patch_size=16, embed_dim=96, depth=4, num_heads=3, **extra)
    vit = VisionTransformer(**cfg, attn_impl='eager').eval()
    counted, _, _ = _count(vit, (torch.randn(1, 3, 64, 64),))
    assert backbone_macs(project_shape(cfg), 64, 64) == pytest.approx(counted, rel=0.02)


def test_spec_sweep_and_timm_entries_are_checked(tmp_path):
    from mae_dense.suite.spec import parse_spec

    ok = dict(
        backbones=[
            dict(name='d', timm='vit_base_patch14_reg4_dinov2', timm_kwargs={'depth': 4}, random=True),
            dict(name='m', checkpoint='https://dl.fbaipublicfiles.com/mae/pretrain/x.pth', size='330 MB'),
            dict(name='g', timm='vit_base_patch16_dinov3', checkpoint=str(tmp_path / 'no.pth'), gated='ask'),
        ],
        ade20k=dict(config=ADE_B, sweep={'lr': [1e-4, 2e-4]}),
    )
    spec = parse_spec(ok, 'p.yaml')
    assert (spec.backbones[0].timm, spec.backbones[0].timm_kwargs) == (
        'vit_base_patch14_reg4_dinov2',
        {'depth': 4},
    )
    assert spec.tasks[0].sweep == {'lr': [1e-4, 2e-4]}
    assert (spec.backbones[1].size, spec.backbones[2].gated) == (
        '330 MB',
        'ask',
    )  # a gated file may be absent
    bad = [
        (
            dict(ade20k=dict(config=ADE_B, sweep={'lrr': [1, 2]})),
            "p.yaml: ade20k.sweep: unknown key 'lrr'; did you mean 'lr'?",
        ),
        (
            dict(ade20k=dict(config=ADE_B, sweep={'lr': [1e-4]})),
            'ade20k.sweep.lr: expected a list of at least 2',
        ),
        (dict(probe=dict(config=ADE_B, sweep={'lr': [1, 2]})), "p.yaml: probe: unknown key 'sweep'"),
        (
            dict(
                backbones=[dict(name='x', timm_kwargs={'depth': 4}, random=True)], ade20k=dict(config=ADE_B)
            ),
            'timm_kwargs needs timm',
        ),
        (
            dict(
                backbones=[dict(name='x', checkpoint='https://x/y.pth', gated='ask')],
                ade20k=dict(config=ADE_B),
            ),
            'gated weights have no URL',
        ),
    ]
    for cfg, message in bad:
        with pytest.raises(PipelineError, match=message.replace('?', r'\?').replace('(', r'\(')):
            parse_spec(cfg, 'p.yaml')


def test_a_probe_card_says_searched_only_where_its_mode_trains_several_heads():
    """The fast mode of the ADE20K probe sweeps four heads' lrs; its augmented mode and the depth probe
    train one head at the config's lr."""
    from mae_dense.suite.backbones import BackboneSpec

    scratch = BackboneSpec(name='r', kind='random')
    probe = 'configs/ade20k/linear-probe_mae-base_1x16_512x512_40k_ade20k.py'
    depth = 'configs/nyu/linear-depth_mae-base_nyu.py'
    for task, config, mode, searched in (
        ('probe', probe, 'fast', 'the probe sweeps its heads (its own lr search)'),
        ('probe', probe, 'augmented', 'not searched (the config lr)'),
        ('depth', depth, 'fast', 'not searched (the config lr)'),
    ):
        cfg = RunConfig.read(config, {}, {'mode': mode}).cfg
        assert card_of(TASKS[task], cfg, scratch, mode, None)['lr_searched'] == searched, (task, mode)


def test_the_depth_card_names_its_training_set_and_a_timm_card_its_patch_fit():
    from mae_dense.suite.backbones import BackboneSpec

    dino = BackboneSpec(name='d', kind='random', timm='vit_small_patch14_reg4_dinov2')
    depth = 'configs/nyu/linear-depth_mae-base_nyu.py'
    card = card_of(TASKS['depth'], RunConfig.read(depth, {}, {'mode': 'fast'}).cfg, dino, 'fast', None)
    assert card['train_set'].startswith('the 795 images of the official labeled set')
    assert card['patch_size'] == '14 (input resized by 14/16)'
    assert card['windows'] == 'none: global attention in every block'
    bts = {'train_dataloader.dataset.file_list': 'nyudepthv2_train_files_with_gt.txt'}
    card = card_of(TASKS['depth'], RunConfig.read(depth, bts, {'mode': 'augmented'}).cfg, dino, 'augmented')
    assert card['train_set'].startswith('the images of nyudepthv2_train_files_with_gt.txt')
    ade = RunConfig.read(ADE_B, {}).cfg
    assert card_of(TASKS['ade20k'], ade, BackboneSpec(name='r', kind='random'))['train_set'] is None
