"""Layer-wise LR decay: one pure function, checked against mmseg's constructor and the MAE recipe."""

from __future__ import annotations

import pytest
import torch

from mae_dense.checkpoint.layouts import canonical_to_mm
from mae_dense.optim.layer_decay import get_layer_id, param_rule


@pytest.mark.parametrize(
    'name,expect',
    [
        ('backbone.cls_token', 0),
        ('backbone.pos_embed', 0),
        ('backbone.mask_token', 0),
        ('backbone.patch_embed.proj.weight', 0),
        ('backbone.blocks.0.norm1.weight', 1),
        ('backbone.blocks.11.mlp.fc2.bias', 12),
        ('backbone.norm.weight', 13),
        ('decode_head.conv_seg.weight', 13),
        ('neck.upsample_4x.0.weight', 13),
        ('backbone.blocks_extra.weight', 13),
    ],
)
def test_layer_ids(name, expect):
    assert get_layer_id(name, 12, prefix='backbone.') == expect


def test_scales_and_mae_policy():
    r = param_rule('backbone.blocks.3.attn.qkv.weight', 2, 12, 0.65, 0.05, 'mae', 'backbone.')
    assert r.layer_id == 4 and r.lr_scale == pytest.approx(0.65**9) and r.weight_decay == 0.05
    assert param_rule('decode_head.conv_seg.weight', 4, 12, 0.65, 0.05, prefix='backbone.').lr_scale == 1.0
    for name, ndim in [
        ('backbone.pos_embed', 3),
        ('backbone.cls_token', 3),
        ('backbone.blocks.0.attn.qkv.bias', 1),
        ('backbone.blocks.0.attn.relative_position_bias_table', 2),
        ('backbone.blocks.0.gamma_1', 1),
        ('backbone.blocks.0.attn.rel_pos_h', 2),
        ('decode_head.conv_seg.bias', 1),
    ]:
        assert param_rule(name, ndim, 12, 0.65, 0.05, 'mae', 'backbone.').weight_decay == 0.0, name
    # mmseg policy: tables, pos_embed and cls_token are decayed (its exemption never matches)
    for name, ndim in [
        ('backbone.pos_embed', 3),
        ('backbone.cls_token', 3),
        ('backbone.blocks.0.attn.relative_position_bias_table', 2),
    ]:
        assert param_rule(name, ndim, 12, 0.65, 0.05, 'mmseg', 'backbone.').weight_decay == 0.05, name


def _groups_by_name(model, groups):
    ids = {id(p): n for n, p in model.named_parameters()}
    return {ids[id(p)]: (g['lr'], g['weight_decay']) for g in groups for p in g['params']}


def test_mmseg_policy_equals_mmseg_constructor():
    from helpers import build_segmentor, mmseg_segmentor
    from mmengine.optim import build_optim_wrapper

    import mae_dense.openmmlab  # noqa: F401
    import mae_dense.openmmlab.segmentation  # noqa: F401

    ref_model = mmseg_segmentor()
    optim = dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)
    ref = build_optim_wrapper(
        ref_model,
        dict(
            type='OptimWrapper',
            optimizer=optim,
            constructor='LayerDecayOptimizerConstructor',
            paramwise_cfg=dict(num_layers=4, layer_decay_rate=0.65),
        ),
    )
    ours_model = build_segmentor(crop=32)  # the same tiny UperNet, with the project's ViT
    ours = build_optim_wrapper(
        ours_model,
        dict(
            type='OptimWrapper',
            optimizer=optim,
            constructor='ViTLayerDecayOptimizerConstructor',
            paramwise_cfg=dict(num_layers=4, layer_decay_rate=0.65, wd_policy='mmseg'),
        ),
    )
    expect = _groups_by_name(ref_model, ref.optimizer.param_groups)
    got = _groups_by_name(ours_model, ours.optimizer.param_groups)
    got_mm = {
        ('backbone.' + canonical_to_mm(n[9:]) if n.startswith('backbone.') else n): v for n, v in got.items()
    }
    assert set(got_mm) == set(expect)
    for name, (lr, wd) in expect.items():
        assert got_mm[name][0] == pytest.approx(lr) and got_mm[name][1] == wd, name
    # the default (MAE recipe) differs exactly on the embeddings and the tables
    default = build_optim_wrapper(
        ours_model,
        dict(
            type='OptimWrapper',
            optimizer=optim,
            constructor='ViTLayerDecayOptimizerConstructor',
            paramwise_cfg=dict(num_layers=4, layer_decay_rate=0.65),
        ),
    )
    diff = {n for n, v in _groups_by_name(ours_model, default.optimizer.param_groups).items() if v != got[n]}
    assert diff == {'backbone.pos_embed', 'backbone.cls_token'} | {
        f'backbone.blocks.{i}.attn.relative_position_bias_table' for i in range(4)
    }
    assert torch.is_tensor(next(ours_model.parameters()))
