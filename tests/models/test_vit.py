"""The one ViT against the references (mmseg's MAE backbone, timm's VisionTransformer) on the same weights."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY, mmseg_mae, randomize_, requires_inductor, seg_vit, timm_vit

from mae_dense.checkpoint import load_backbone
from mae_dense.models import VisionTransformer


@pytest.mark.parametrize('attn_impl', ['sdpa', 'eager'])
def test_seg_mode_equals_mmseg_mae_on_every_out_index(attn_impl):
    ref = randomize_(mmseg_mae(), seed=1)  # random tables, gammas, norms: nothing hides behind zeros/ones
    ours = seg_vit(attn_impl=attn_impl)
    report = load_backbone(ours, ref.state_dict(), log=False)
    assert report.fresh == []  # the mmseg file has every tensor, tables and gammas included
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expect, got = ref(x), ours(x)
    assert len(expect) == len(got) == 4
    for e, g in zip(expect, got):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_mae_mode_equals_timm_vit():
    ref = randomize_(timm_vit(), seed=2)
    ours = VisionTransformer(mode='mae', img_size=32, **TINY).eval()
    load_backbone(ours, ref.state_dict(), log=False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(x), ref.forward_features(x), rtol=1e-5, atol=1e-5)


def test_mae_mode_visible_tokens_equal_timm_blocks_on_the_subset():
    ref = randomize_(timm_vit(), seed=3)
    ours = VisionTransformer(mode='mae', img_size=32, **TINY).eval()
    load_backbone(ours, ref.state_dict(), log=False)
    x = torch.randn(2, 3, 32, 32)
    keep = torch.stack([torch.randperm(16)[:4] for _ in range(2)])  # 75% masked
    with torch.no_grad():
        tokens = ref.patch_embed(x) + ref.pos_embed[:, 1:]
        tokens = torch.gather(tokens, 1, keep[..., None].expand(-1, -1, tokens.shape[-1]))
        cls = (ref.cls_token + ref.pos_embed[:, :1]).expand(2, -1, -1)
        expect = ref.norm(ref.blocks(torch.cat([cls, tokens], 1)))
        got = ours.forward_features(x, keep_idx=keep)
    assert got.shape == (2, 5, TINY['embed_dim'])
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)


def test_mae_mode_sincos_is_fixed_and_official():
    from mae_dense.layers import get_2d_sincos_pos_embed

    vit = VisionTransformer(mode='mae', img_size=32, **TINY)
    assert not vit.pos_embed.requires_grad
    torch.testing.assert_close(vit.pos_embed[0], get_2d_sincos_pos_embed(64, 4, 4, cls_token=True))


@pytest.mark.parametrize('mode', ['mae', 'seg', 'det'])
def test_sdpa_equals_eager_and_grad_checkpointing_same(mode):
    kw = dict(img_size=32, **TINY)
    if mode == 'det':
        kw.update(window_size=2, pretrain_img_size=16)
    a = randomize_(VisionTransformer(mode=mode, **kw), seed=4).eval()
    b = VisionTransformer(mode=mode, attn_impl='eager', **kw).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 40, 24)  # non-square, not the training size
    with torch.no_grad():
        for oa, ob in zip(_as_tuple(a(x)), _as_tuple(b(x))):
            torch.testing.assert_close(oa, ob, rtol=1e-4, atol=1e-4)
    # gradient checkpointing: same output, same gradients
    a.train()
    out = _as_tuple(a(x))
    loss = sum((o**2).mean() for o in out)
    grads = torch.autograd.grad(loss, [p for p in a.parameters() if p.requires_grad])
    a.set_grad_checkpointing(True)
    out_ck = _as_tuple(a(x))
    loss_ck = sum((o**2).mean() for o in out_ck)
    grads_ck = torch.autograd.grad(loss_ck, [p for p in a.parameters() if p.requires_grad])
    torch.testing.assert_close(loss_ck, loss)
    for g1, g2 in zip(grads, grads_ck):
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-5)


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


@pytest.mark.parametrize('mode', ['mae', 'seg', 'det'])
def test_every_parameter_gets_a_gradient(mode):
    kw = dict(img_size=32, **TINY)
    if mode == 'det':
        kw.update(window_size=2, pretrain_img_size=16)
    vit = randomize_(VisionTransformer(mode=mode, **kw), seed=5)
    out = _as_tuple(vit(torch.randn(2, 3, 32, 48)))
    sum(o.square().mean() for o in out).backward()
    no_grad = [
        n for n, p in vit.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())
    ]
    assert no_grad == []


def test_non_square_and_larger_inputs_run_where_mmseg_raises():
    ref = mmseg_mae()
    with pytest.raises(RuntimeError, match='must match the size'):
        ref(torch.randn(1, 3, 32, 48))
    ours = seg_vit()
    for size in [(32, 48), (16, 24), (64, 64)]:
        outs = ours(torch.randn(1, 3, *size))
        assert all(o.shape == (1, 64, size[0] // 8, size[1] // 8) for o in outs)


def test_seg_smaller_grid_indexes_the_table_exactly():
    # A sub-grid uses the same offsets: the top-left 2x2 patches of a 4x4 image attend like a 2x2 image
    # only if the table is indexed by offset, which is what we check through the explicit bias.
    vit = randomize_(seg_vit(), seed=6)
    attn = vit.blocks[0].attn
    small = attn._beit_bias((2, 3), torch.device('cpu'))[0]  # (heads, 7, 7)
    full = attn._beit_bias((4, 4), torch.device('cpu'))[0]  # (heads, 17, 17)
    # token (r, c) of the 2x3 grid <-> token r*4+c of the 4x4 grid (+1 for cls)
    idx = torch.tensor([0] + [1 + r * 4 + c for r in range(2) for c in range(3)])
    torch.testing.assert_close(small, full[:, idx][:, :, idx])


def test_det_mode_window_and_global_blocks():
    vit = VisionTransformer(
        mode='det', img_size=64, window_size=4, pretrain_img_size=32, global_blocks=(1, 3), **TINY
    )
    assert [b.window_size for b in vit.blocks] == [4, 0, 4, 0]
    assert vit.cls_token is None and vit.pos_embed.shape == (1, 1 + 16, 64)  # the 224-style cls row is kept
    assert vit.blocks[0].attn.rel_pos_h.shape[0] == 2 * 4 - 1  # window
    assert vit.blocks[1].attn.rel_pos_h.shape[0] == 2 * 8 - 1  # global: the 64/8 grid
    out = vit(torch.randn(1, 3, 72, 40))  # 9x5 grid: zero-padded to windows of 4
    assert len(out) == 1 and out[0].shape == (1, 64, 9, 5)


def test_vitdet_defaults_for_b_and_l():
    b = VisionTransformer(mode='det', img_size=1024, depth=12, embed_dim=64, num_heads=4)
    assert b.global_blocks == (2, 5, 8, 11) and b.blocks[2].attn.rel_pos_h.shape[0] == 127
    assert b.blocks[0].attn.rel_pos_h.shape[0] == 27
    large = VisionTransformer(mode='det', img_size=1024, depth=24, embed_dim=64, num_heads=4)
    assert large.global_blocks == (5, 11, 17, 23)


def test_no_weight_decay_and_layer_ids_of_the_vit_parameters():
    from mae_dense.optim.layer_decay import get_layer_id, no_weight_decay_names

    vit = seg_vit()
    names = dict(vit.named_parameters())
    nwd = no_weight_decay_names(vit.named_parameters())
    assert {'pos_embed', 'cls_token', 'blocks.0.attn.relative_position_bias_table'} <= nwd <= set(names)
    ids = {
        n: get_layer_id(n, vit.depth)
        for n in ('cls_token', 'patch_embed.proj.weight', 'blocks.2.mlp.fc1.weight')
    }
    assert ids == {'cls_token': 0, 'patch_embed.proj.weight': 0, 'blocks.2.mlp.fc1.weight': 3}
    assert all(n in names for n in ids) and get_layer_id('norm.weight', vit.depth) == vit.depth + 1


@pytest.mark.slow
@requires_inductor
def test_compiled_blocks_equal_the_uncompiled_model():
    """compile=True: regional torch.compile of the blocks; same names, same outputs, same gradients."""
    kw = dict(img_size=32, **TINY)
    eager = randomize_(VisionTransformer(mode='seg', **kw), seed=7)
    compiled = VisionTransformer(mode='seg', compile=True, **kw)
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints are unchanged
    compiled.load_state_dict(eager.state_dict())
    x = torch.randn(2, 3, 40, 32)
    outs, grads = [], []
    for model in (eager, compiled):
        out = model(x)
        outs.append(out)
        grads.append(torch.autograd.grad(sum(o.square().mean() for o in out), list(model.parameters())))
    assert all(b._compiled_call_impl is not None for b in compiled.blocks)
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_compile_option_is_checked():
    from mae_dense.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown torch.compile arguments \['mdoe'\]"):
        VisionTransformer(mode='seg', img_size=32, compile=dict(mdoe='max-autotune'), **TINY)
    with pytest.raises(ConfigError, match="compile='yes': expected True, False or a dict"):
        VisionTransformer(mode='seg', img_size=32, compile='yes', **TINY)


@pytest.mark.slow
@requires_inductor
def test_compiled_blocks_with_flex_attention_infer_like_eager():
    """compile=True, attn_impl='flex': the BEiT bias computed in the compiled block, read by the kernel."""
    kw = dict(img_size=32, **TINY)
    eager = randomize_(VisionTransformer(mode='seg', attn_impl='eager', **kw), seed=9).eval()
    compiled = VisionTransformer(mode='seg', attn_impl='flex', compile=True, **kw).eval()
    compiled.load_state_dict(eager.state_dict())
    x = torch.randn(2, 3, 40, 32)
    with torch.no_grad():
        for a, b in zip(eager(x), compiled(x)):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
