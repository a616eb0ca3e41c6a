"""The MAE model against the official algorithm: masking, patch order, loss, checkpoint layout, timm encoder."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from helpers import official_layout, randomize_, requires_inductor
from helpers import tiny_mae as tiny
from torch import nn

from mae_dense.checkpoint import CheckpointError, load_full_mae
from mae_dense.models import MaskedAutoencoder, build_mae

L = 16  # TINY_MAE: img 32, patch 8


def official_state_dict(model: MaskedAutoencoder, seed: int = 3) -> dict[str, torch.Tensor]:
    """What the official models_mae.py would save for this model: no ``backbone.`` prefix, random values."""
    g = torch.Generator().manual_seed(seed)
    return {
        k.removeprefix('backbone.'): torch.randn(v.shape, generator=g) * 0.2
        for k, v in model.state_dict().items()
    }


def test_unknown_arch_is_named():
    with pytest.raises(ValueError, match="arch='gigantic'"):
        build_mae('gigantic')


def test_official_parameter_names_and_fixed_decoder_pos_embed():
    m = tiny()
    names = dict(m.named_parameters())
    for key in ('decoder_embed.weight', 'mask_token', 'decoder_pos_embed', 'decoder_norm.weight'):
        assert key in names
    assert 'decoder_blocks.0.attn.qkv.bias' in names  # qkv_bias=True
    assert 'backbone.blocks.1.mlp.fc2.weight' in names and 'backbone.cls_token' in names
    assert m.decoder_pred.out_features == 8 * 8 * 3
    assert not m.decoder_pos_embed.requires_grad and not m.backbone.pos_embed.requires_grad
    assert m.decoder_pos_embed.shape == (1, 1 + L, 32)
    assert torch.all(m.decoder_pos_embed[0, 0] == 0)  # cls row zero
    assert m.decoder_norm.eps == 1e-6 and m.decoder_blocks[0].norm1.eps == 1e-6
    # official init: Linear bias 0, LN (1, 0)
    assert torch.all(m.decoder_embed.bias == 0) and torch.all(m.decoder_norm.weight == 1)


@pytest.mark.parametrize('mask_ratio', [0.75, 0.5, 0.3, 0.0])
def test_random_masking_counts_and_inverse(mask_ratio):
    m = tiny()
    torch.manual_seed(0)
    noise = torch.rand(5, L)
    ids_keep, mask, ids_restore = m.random_masking(5, L, mask_ratio, noise=noise)
    k = int(L * (1 - mask_ratio))
    assert ids_keep.shape == (5, k) and mask.shape == (5, L) and ids_restore.shape == (5, L)
    ids_shuffle = torch.argsort(noise, dim=1)
    assert torch.equal(ids_keep, ids_shuffle[:, :k])  # the k smallest noises are kept
    # ids_restore inverts the shuffle
    assert torch.equal(torch.gather(ids_shuffle, 1, ids_restore), torch.arange(L).expand(5, L))
    # mask: exactly L-K ones, at the removed ids, in the original order
    assert torch.all(mask.sum(1) == L - k)
    for i in range(5):
        removed = set(range(L)) - set(ids_keep[i].tolist())
        assert set(torch.nonzero(mask[i]).flatten().tolist()) == removed


def test_random_masking_draws_fresh_noise():
    m = tiny()
    a = m.random_masking(4, L, 0.75)[0]
    b = m.random_masking(4, L, 0.75)[0]
    assert a.shape == (4, 4) and not torch.equal(a, b)


def test_patchify_order_and_unpatchify_round_trip():
    m = tiny()
    imgs = torch.randn(2, 3, 32, 32)
    x = m.patchify(imgs)
    assert x.shape == (2, L, 8 * 8 * 3)
    # explicit loop: patch (i, j) at index i*4+j; inside a patch row p, column q, channel c
    expect = torch.empty(2, L, 8 * 8 * 3)
    for n in range(2):
        for i in range(4):
            for j in range(4):
                vec = []
                for p in range(8):
                    for q in range(8):
                        for c in range(3):
                            vec.append(imgs[n, c, i * 8 + p, j * 8 + q])
                expect[n, i * 4 + j] = torch.stack(vec)
    assert torch.equal(x, expect)
    assert torch.equal(m.unpatchify(x), imgs)


def test_encoder_sees_only_visible_tokens():
    m = tiny().eval()
    imgs = torch.randn(3, 3, 32, 32)
    latent, mask, ids_restore = m.forward_encoder(imgs, 0.75)
    assert latent.shape == (3, 1 + 4, 64)
    assert mask.shape == (3, L) and ids_restore.shape == (3, L)
    seen = []
    m.backbone.blocks[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape))
    m(imgs, mask_ratio=0.5)
    assert seen == [torch.Size([3, 1 + 8, 64])]


def test_loss_only_on_masked_patches():
    m = tiny()
    imgs = torch.randn(2, 3, 32, 32)
    noise = torch.rand(2, L)
    with torch.no_grad():
        _, pred, mask = m(imgs, noise=noise)
        base = m.forward_loss(imgs, pred, mask)
        vis = torch.nonzero(mask[0] == 0).flatten()[0]
        hid = torch.nonzero(mask[0] == 1).flatten()[0]
        p2 = pred.clone()
        p2[0, vis] += 5.0
        assert torch.equal(m.forward_loss(imgs, p2, mask), base)  # visible patch: loss unchanged
        p3 = pred.clone()
        p3[0, hid] += 5.0
        assert m.forward_loss(imgs, p3, mask) > base  # masked patch: loss changes
        # explicit: mean over p*p*3 per patch, then over masked patches
        target = m.patchify(imgs)
        per_patch = ((pred - target) ** 2).mean(-1)
        torch.testing.assert_close(base, per_patch[mask.bool()].mean())


def test_norm_pix_target_formula():
    m = tiny(norm_pix_loss=True)
    imgs = torch.randn(2, 3, 32, 32) * 3 + 1
    pred = torch.randn(2, L, 192)
    mask = torch.zeros(2, L)
    mask[:, ::3] = 1
    # explicit: per patch (N, L) mean and UNBIASED variance over its 192 values, eps 1e-6
    target = torch.empty(2, L, 192)
    for n in range(2):
        for i in range(L):
            v = m.patchify(imgs)[n, i]
            mu = v.sum() / v.numel()
            var = ((v - mu) ** 2).sum() / (v.numel() - 1)
            target[n, i] = (v - mu) / torch.sqrt(var + 1e-6)
    per_patch = ((pred - target) ** 2).mean(-1)
    expect = (per_patch * mask).sum() / mask.sum()
    torch.testing.assert_close(m.forward_loss(imgs, pred, mask), expect)
    assert not torch.allclose(tiny().forward_loss(imgs, pred, mask), expect)  # pixel target differs


def test_official_layout_loads_and_reconstructs_identically():
    src = tiny().eval()
    sd = official_state_dict(src)
    assert 'cls_token' in sd and 'blocks.0.norm1.weight' in sd and 'mask_token' in sd
    load_full_mae(src, sd)
    dst = tiny().eval()
    load_full_mae(dst, {'model': sd})  # official checkpoint wrapper
    own = tiny().eval()
    load_full_mae(own, src.state_dict())  # backbone.-prefixed layout
    imgs, noise = torch.randn(2, 3, 32, 32), torch.rand(2, L)
    with torch.no_grad():
        ref = src(imgs, noise=noise)
        for m in (dst, own):
            out = m(imgs, noise=noise)
            for a, b in zip(out, ref):
                assert torch.equal(a, b)
    # the loaded values are the checkpoint's, pos embeds included (not regenerated)
    torch.testing.assert_close(dst.backbone.pos_embed, sd['pos_embed'], rtol=0, atol=0)
    torch.testing.assert_close(dst.decoder_pos_embed, sd['decoder_pos_embed'], rtol=0, atol=0)
    back = official_layout(dst.state_dict())
    assert back.keys() == sd.keys()


@pytest.mark.parametrize('attn_impl', ['sdpa', 'eager'])
def test_encoder_equals_timm_forward_features(attn_impl):
    import timm.models.vision_transformer as tv

    ref = tv.VisionTransformer(
        img_size=32,
        patch_size=8,
        embed_dim=64,
        depth=2,
        num_heads=4,
        num_classes=0,
        global_pool='',
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
    ).eval()
    model = tiny(attn_impl=attn_impl).eval()
    sd = official_state_dict(model, seed=5)
    load_full_mae(model, sd)
    enc = {k: v for k, v in sd.items() if not k.startswith(('decoder_', 'mask_token'))}
    missing, unexpected = ref.load_state_dict(enc, strict=False)
    assert unexpected == [] and missing == []
    imgs = torch.randn(2, 3, 32, 32)
    identity = torch.arange(L, dtype=torch.float32).expand(2, L)  # argsort(identity) = identity
    with torch.no_grad():
        latent, mask, ids_restore = model.forward_encoder(imgs, 0.0, noise=identity)
        expect = ref.forward_features(imgs)
        all_idx = model.backbone.forward_features(imgs, keep_idx=torch.arange(L).expand(2, L))
    assert mask.sum() == 0 and torch.equal(ids_restore, torch.arange(L).expand(2, L))
    torch.testing.assert_close(latent, expect, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(all_idx, expect, rtol=1e-5, atol=1e-5)


class OfficialMAE(nn.Module):
    """The official models_mae.py forward, transcribed (timm blocks), with the masking noise as an input."""

    def __init__(self, norm_pix_loss: bool = False) -> None:
        from timm.models.vision_transformer import Block as TimmBlock
        from timm.models.vision_transformer import PatchEmbed as TimmPatchEmbed

        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.patch_embed = TimmPatchEmbed(32, 8, 3, 64)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 64))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + L, 64))
        self.blocks = nn.ModuleList([TimmBlock(64, 4, 4.0, qkv_bias=True, norm_layer=norm) for _ in range(2)])
        self.norm = norm(64)
        self.decoder_embed = nn.Linear(64, 32)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 32))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, 1 + L, 32))
        self.decoder_blocks = nn.ModuleList([TimmBlock(32, 4, 4.0, qkv_bias=True, norm_layer=norm)])
        self.decoder_norm = norm(32)
        self.decoder_pred = nn.Linear(32, 8 * 8 * 3)
        self.norm_pix_loss = norm_pix_loss

    def forward(self, imgs, noise, mask_ratio=0.75):
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        n, length, d = x.shape
        len_keep = int(length * (1 - mask_ratio))
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, d))
        mask = torch.ones([n, length])
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, dim=1, index=ids_restore)
        cls_token = self.cls_token + self.pos_embed[:, :1, :]
        x = torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:, :]
        p = 8
        h = w = imgs.shape[2] // p
        target = torch.einsum('nchpwq->nhwpqc', imgs.reshape(n, 3, h, p, w, p)).reshape(n, h * w, p * p * 3)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum(), pred, mask


@pytest.mark.parametrize('norm_pix_loss', [False, True])
def test_forward_equals_the_official_forward(norm_pix_loss):
    ref = OfficialMAE(norm_pix_loss).eval()
    sd = official_state_dict(tiny(), seed=7)
    ref.load_state_dict(sd, strict=True)  # the official names ARE the official module's names
    ours = tiny(norm_pix_loss=norm_pix_loss).eval()
    load_full_mae(ours, sd)
    imgs, noise = torch.randn(3, 3, 32, 32), torch.rand(3, L)
    with torch.no_grad():
        for ratio in (0.75, 0.4):
            for a, b in zip(ours(imgs, ratio, noise=noise), ref(imgs, noise, ratio)):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_loss_decreases_with_adam():
    torch.manual_seed(0)
    m = tiny()
    # smooth images: masked patches are predictable from the visible ones (white noise is not)
    imgs = torch.nn.functional.interpolate(torch.randn(8, 3, 4, 4), size=32, mode='bilinear')
    noise = torch.rand(8, L)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(30):
        loss, _, _ = m(imgs, noise=noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    assert not m.decoder_pos_embed.requires_grad and m.decoder_pos_embed.grad is None


def test_grad_checkpointing_gives_same_gradients():
    imgs, noise = torch.randn(2, 3, 32, 32), torch.rand(2, L)
    grads = []
    for gc in (False, True):
        m = randomize_(tiny(grad_checkpointing=gc), seed=2)
        m(imgs, noise=noise)[0].backward()
        grads.append(m.decoder_blocks[0].mlp.fc1.weight.grad.clone())
        grads.append(m.backbone.blocks[0].attn.qkv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[2])
    torch.testing.assert_close(grads[1], grads[3])


def test_loading_a_full_mae_names_wrong_keys():
    m = tiny()
    sd = official_state_dict(m)
    sd['blocks.0.mlp.fc3.weight'] = sd.pop('blocks.0.mlp.fc2.weight')
    with pytest.raises(CheckpointError) as exc:
        load_full_mae(m, sd)
    msg = str(exc.value)
    assert '\n' not in msg
    assert 'backbone.blocks.0.mlp.fc3.weight' in msg and 'backbone.blocks.0.mlp.fc2.weight' in msg
    sd = official_state_dict(m)
    sd['mask_token'] = torch.zeros(1, 1, 48)
    with pytest.raises(CheckpointError, match=r'mask_token \(1, 1, 48\)'):
        load_full_mae(m, sd)
    enc_only = {k: v for k, v in official_state_dict(m).items() if not k.startswith(('decoder', 'mask'))}
    with pytest.raises(CheckpointError, match='missing keys: mask_token'):
        load_full_mae(m, enc_only)  # an encoder-only release is not a full MAE


def test_factory_sizes(monkeypatch):
    import mae_dense.models.mae as mae_mod

    monkeypatch.setattr(mae_mod, 'MaskedAutoencoder', lambda **kw: kw)  # the config, without 600M params
    sizes = {'base': (768, 12, 12, 16), 'large': (1024, 24, 16, 16), 'huge': (1280, 32, 16, 14)}
    for arch, (dim, depth, heads, p) in sizes.items():
        cfg = build_mae(arch, norm_pix_loss=True)
        assert (cfg['embed_dim'], cfg['depth'], cfg['num_heads'], cfg['patch_size']) == (dim, depth, heads, p)
        assert (cfg['decoder_embed_dim'], cfg['decoder_depth'], cfg['decoder_num_heads']) == (512, 8, 16)
        assert cfg['mlp_ratio'] == 4.0 and cfg['norm_pix_loss'] is True


@pytest.mark.slow
@requires_inductor
def test_compiled_blocks_give_the_same_loss():
    """compile=True compiles every encoder and decoder block in place; the loss is the uncompiled one."""
    eager = randomize_(tiny(), seed=8)
    compiled = tiny(compile=True)
    compiled.load_state_dict(eager.state_dict())
    blocks = list(compiled.backbone.blocks) + list(compiled.decoder_blocks)
    assert all(b._compiled_call_impl is not None for b in blocks)
    imgs, noise = torch.randn(2, 3, 32, 32), torch.rand(2, L)
    with torch.no_grad():
        torch.testing.assert_close(compiled(imgs, noise=noise)[0], eager(imgs, noise=noise)[0])
