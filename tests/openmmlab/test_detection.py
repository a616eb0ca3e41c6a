"""ViTDet pieces against explicit reference computations: window attention with decomposed relative
position, the simple feature pyramid, detectron2's layer-decay/weight-decay groups, fp16 DDP compression."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_
from torch import nn

from mae_dense.models import VisionTransformer
from mae_dense.models.necks import LayerNorm2d, SimpleFPN

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / 'configs' / 'demo' / 'mask-rcnn_vit-tiny_synthetic_coco.py'


# ----------------------------------------------------------------------------- window attention + rel pos
def _linear_resize(table: torch.Tensor, length: int) -> torch.Tensor:
    """ViTDet: a (L, d) table linearly interpolated to ``length`` rows when the sizes differ."""
    if table.shape[0] == length:
        return table
    return F.interpolate(table.T[None], size=length, mode='linear')[0].T


def _reference_attention(attn, tokens: torch.Tensor, window: int) -> torch.Tensor:
    """Naive ViTDet attention of one image, one window, head and query at a time.

    tokens: (H, W, C) normalised tokens. Windowed blocks zero-pad H, W to multiples of ``window`` (the
    padded tokens take part in attention, as in ViTDet); a global block is one H x W window.
    """
    h, w, c = tokens.shape
    heads, d = attn.num_heads, c // attn.num_heads
    wh, ww = (window, window) if window else (h, w)
    hp, wp = math.ceil(h / wh) * wh, math.ceil(w / ww) * ww
    padded = torch.zeros(hp, wp, c, dtype=tokens.dtype)
    padded[:h, :w] = tokens
    rel_h = _linear_resize(attn.rel_pos_h, 2 * wh - 1)  # row k: offset k - (wh - 1)
    rel_w = _linear_resize(attn.rel_pos_w, 2 * ww - 1)
    out = torch.zeros_like(padded)
    for r0 in range(0, hp, wh):
        for c0 in range(0, wp, ww):
            cells = [(i, j) for i in range(wh) for j in range(ww)]
            x = torch.stack([padded[r0 + i, c0 + j] for i, j in cells])  # (n, C)
            q, k, v = (x @ attn.qkv.weight.T + attn.qkv.bias).split(c, dim=-1)
            heads_out = []
            for m in range(heads):
                qm, km, vm = (t[:, m * d : (m + 1) * d] for t in (q, k, v))
                rows = []
                for a, (ya, xa) in enumerate(cells):
                    logits = torch.stack(
                        [
                            qm[a] @ km[b] / math.sqrt(d)
                            + qm[a] @ rel_h[ya - yb + wh - 1]
                            + qm[a] @ rel_w[xa - xb + ww - 1]
                            for b, (yb, xb) in enumerate(cells)
                        ]
                    )
                    p = torch.exp(logits - logits.max())
                    rows.append((p / p.sum()) @ vm)
                heads_out.append(torch.stack(rows))
            y = torch.cat(heads_out, dim=-1) @ attn.proj.weight.T + attn.proj.bias  # (n, C)
            for (i, j), val in zip(cells, y):
                out[r0 + i, c0 + j] = val
    return out[:h, :w]


@pytest.mark.parametrize('attn_impl', ['sdpa', 'eager'])
def test_det_blocks_match_naive_window_attention_with_decomposed_rel_pos(attn_impl):
    # Tables for a 4x4 global grid (img 64 / patch 16), run on a 6x5 grid: window 4 pads to 8x8, and the
    # global block's 7-row tables are interpolated to 11 and 9 rows.
    vit = VisionTransformer(
        mode='det',
        img_size=64,
        patch_size=16,
        embed_dim=32,
        depth=2,
        num_heads=2,
        window_size=4,
        global_blocks=(1,),
        attn_impl=attn_impl,
    )
    vit = randomize_(vit, seed=3).double().eval()
    assert vit.blocks[0].window_size == 4 and vit.blocks[1].window_size == 0
    assert vit.blocks[1].attn.rel_pos_h.shape == (7, 16)
    hw = (6, 5)
    x = torch.randn(2, hw[0] * hw[1], 32, dtype=torch.float64)
    for blk, window in zip(vit.blocks, (4, 0)):
        with torch.no_grad():
            got = blk(x, hw)
            expect = []
            for img in x:
                tokens = blk.norm1(img).view(*hw, 32)
                y = img + _reference_attention(blk.attn, tokens, window).reshape(-1, 32)
                expect.append(y + blk.mlp(blk.norm2(y)))
        # the global tables are interpolated in fp32 (as ViTDet does), the rest is fp64
        tol = 1e-10 if window else 1e-6
        torch.testing.assert_close(got, torch.stack(expect), rtol=tol, atol=tol)


# --------------------------------------------------------------------------------------------- SimpleFPN
def _channel_ln(x: torch.Tensor, norm: LayerNorm2d) -> torch.Tensor:
    """detectron2's LayerNorm: explicit mean and biased variance over C at every pixel, eps 1e-6."""
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    return norm.weight[:, None, None] * (x - u) / torch.sqrt(s + 1e-6) + norm.bias[:, None, None]


def _conv_norm(x: torch.Tensor, conv) -> torch.Tensor:
    assert conv.bias is None  # detectron2: no bias before a norm
    return _channel_ln(F.conv2d(x, conv.weight, padding=conv.padding), conv.norm)


def test_simple_fpn_strides_channels_values_and_detectron2_names():
    neck = randomize_(SimpleFPN(in_channels=32, out_channels=16), seed=1).eval()
    x = torch.randn(2, 32, 6, 8)
    with torch.no_grad():
        outs = neck((x,))
        assert [tuple(o.shape) for o in outs] == [
            (2, 16, 24, 32),
            (2, 16, 12, 16),
            (2, 16, 6, 8),
            (2, 16, 3, 4),
            (2, 16, 2, 2),
        ]
        assert neck.strides == (4, 8, 16, 32)  # + 64 for P6

        # stride 4: ConvT 32->16, LN, GELU, ConvT 16->8, then 1x1 + LN and 3x3 + LN to 16 channels
        s = neck.simfp_2
        y = F.conv_transpose2d(x, s[0].weight, s[0].bias, stride=2)
        y = F.gelu(_channel_ln(y, s[1]))
        y = F.conv_transpose2d(y, s[3].weight, s[3].bias, stride=2)
        torch.testing.assert_close(outs[0], _conv_norm(_conv_norm(y, s[4]), s[5]), rtol=1e-5, atol=1e-5)
        # stride 32: 2x2 max-pool; P6: kernel-1 stride-2 max-pool of it (every other pixel)
        s = neck.simfp_5
        y = F.max_pool2d(x, 2, 2)
        torch.testing.assert_close(outs[3], _conv_norm(_conv_norm(y, s[1]), s[2]), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(outs[4], outs[3][:, :, ::2, ::2])
        torch.testing.assert_close(neck(x)[2], _conv_norm(_conv_norm(x, neck.simfp_4[0]), neck.simfp_4[1]))

    conv_norm = ('weight', 'norm.weight', 'norm.bias')
    expect = (
        {f'simfp_2.{i}.{p}' for i in (0, 1, 3) for p in ('weight', 'bias')}
        | {f'simfp_2.{i}.{p}' for i in (4, 5) for p in conv_norm}
        | {f'simfp_3.0.{p}' for p in ('weight', 'bias')}
        | {f'simfp_3.{i}.{p}' for i in (1, 2) for p in conv_norm}
        | {f'simfp_4.{i}.{p}' for i in (0, 1) for p in conv_norm}
        | {f'simfp_5.{i}.{p}' for i in (1, 2) for p in conv_norm}
    )
    assert set(neck.state_dict()) == expect  # detectron2 SimpleFeaturePyramid's names


def test_ln2d_is_registered_for_mmdet_conv_heads():
    from mmcv.cnn import ConvModule
    from mmengine.registry import DefaultScope

    import mae_dense.openmmlab.detection  # noqa: F401

    with DefaultScope.overwrite_default_scope('mmdet'):
        conv = ConvModule(8, 4, 3, padding=1, norm_cfg=dict(type='LN2d', eps=1e-6))
    assert isinstance(conv.norm, LayerNorm2d) and conv.norm_name == 'ln' and conv.conv.bias is None
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        expect = F.relu(_channel_ln(F.conv2d(x, conv.conv.weight, padding=1), conv.norm))
        torch.testing.assert_close(conv(x), expect)


# ----------------------------------------------------------------------------------- layer-wise lr decay
_D2_NORM_TYPES = (  # detectron2 solver/build.py get_default_optimizer_params: norm_module_types
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def _d2_vit_lr_decay_rate(name: str, lr_decay_rate: float, num_layers: int) -> float:
    """detectron2 projects/ViTDet get_vit_lr_decay_rate (its backbone is ``backbone.net.``, ours ``backbone.``)."""
    layer_id = num_layers + 1
    if name.startswith('backbone'):
        if '.pos_embed' in name or '.patch_embed' in name:
            layer_id = 0
        elif '.blocks.' in name and '.residual.' not in name:
            layer_id = int(name[name.find('.blocks.') :].split('.')[2]) + 1
    return lr_decay_rate ** (num_layers + 1 - layer_id)


def _d2_param_groups(model: nn.Module, lr: float, wd: float, rate: float, num_layers: int) -> dict:
    """detectron2's get_default_optimizer_params(weight_decay_norm=0, overrides={'pos_embed': wd 0})."""
    out = {}
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            name = f'{module_name}.{param_name}'
            hp = dict(lr=lr, weight_decay=wd)
            if isinstance(module, _D2_NORM_TYPES):
                hp['weight_decay'] = 0.0
            hp['lr'] *= _d2_vit_lr_decay_rate(name, rate, num_layers)
            if param_name == 'pos_embed':
                hp['weight_decay'] = 0.0
            out[name] = (hp['lr'], hp['weight_decay'])
    return out


def _demo_detector():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    import mae_dense.openmmlab.detection  # noqa: F401
    from mae_dense.openmmlab.engine.fallbacks import cpu_fallback_cfg

    register_all_modules(init_default_scope=True)
    cfg = cpu_fallback_cfg(Config.fromfile(str(DEMO)))  # as the tools' Runner builds it without CUDA
    return cfg, MODELS.build(cfg.model)


def test_vitdet_layer_decay_groups_equal_detectron2():
    from mmengine.optim import build_optim_wrapper

    cfg, model = _demo_detector()
    ow = build_optim_wrapper(model, cfg.optim_wrapper)
    names = {id(p): n for n, p in model.named_parameters()}
    got = {names[id(p)]: (g['lr'], g['weight_decay']) for g in ow.optimizer.param_groups for p in g['params']}
    opt, pw = cfg.optim_wrapper.optimizer, cfg.optim_wrapper.paramwise_cfg
    assert pw.wd_policy == 'vitdet'
    L, rate = pw.num_layers, pw.layer_decay_rate
    expect = _d2_param_groups(model, opt.lr, opt.weight_decay, rate, L)
    assert set(got) == set(expect)
    for name, (lr, wd) in expect.items():
        assert got[name][0] == pytest.approx(lr, rel=1e-12) and got[name][1] == wd, name

    def scale(n):
        return got[n][0] / opt.lr

    # layer ids: embeddings 0, block i -> i+1, neck and heads L+1
    assert scale('backbone.patch_embed.proj.weight') == pytest.approx(rate ** (L + 1))
    assert scale('backbone.pos_embed') == pytest.approx(rate ** (L + 1))
    for i in range(L):
        assert scale(f'backbone.blocks.{i}.attn.qkv.weight') == pytest.approx(rate ** (L - i))
    for n in ('neck.simfp_2.0.weight', 'rpn_head.rpn_cls.weight', 'roi_head.mask_head.conv_logits.bias'):
        assert scale(n) == 1.0
    # weight decay: detectron2 exempts torch norm layers and pos_embed; biases, rel-pos tables and the
    # channel LayerNorms of the neck/heads (not torch norm types) are decayed
    exempt = {n for n, (_, wd) in got.items() if wd == 0.0}
    assert exempt == {'backbone.pos_embed'} | {
        f'backbone.blocks.{i}.{m}.{p}'
        for i in range(L)
        for m in ('norm1', 'norm2')
        for p in ('weight', 'bias')
    }
    for n in (
        'backbone.blocks.0.attn.qkv.bias',
        'backbone.blocks.0.attn.rel_pos_h',
        'backbone.blocks.1.attn.rel_pos_w',
        'neck.simfp_2.1.weight',
        'neck.simfp_4.0.norm.bias',
        'roi_head.bbox_head.shared_convs.0.ln.weight',
    ):
        assert got[n][1] == opt.weight_decay, n
    # which is also exactly mmdet's ViTDet port (backbone block norms and pos_embed)
    assert exempt == {n for n in got if (n.startswith('backbone.blocks') and 'norm' in n) or 'pos_embed' in n}


def test_vitdet_policy_is_a_pure_function_of_name_and_norm_membership():
    from mae_dense.optim.layer_decay import norm_param_names, param_rule

    r = param_rule('backbone.blocks.3.norm1.weight', 1, 12, 0.7, 0.1, 'vitdet', 'backbone.', is_norm=True)
    assert (r.layer_id, r.weight_decay) == (4, 0.0) and r.lr_scale == pytest.approx(0.7**9)
    assert param_rule('backbone.blocks.3.attn.proj.bias', 1, 12, 0.7, 0.1, 'vitdet', 'backbone.').weight_decay
    assert param_rule('backbone.pos_embed', 3, 12, 0.7, 0.1, 'vitdet', 'backbone.').weight_decay == 0.0
    # the same names under the MAE policy: biases exempt, tables exempt (that policy is unchanged)
    assert (
        param_rule('backbone.blocks.3.attn.proj.bias', 1, 12, 0.7, 0.1, 'mae', 'backbone.').weight_decay == 0
    )
    m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), LayerNorm2d(4), nn.LayerNorm(4))
    assert norm_param_names(m) == {'1.weight', '1.bias', '3.weight', '3.bias'}


# ------------------------------------------------------------------------------- fp16 gradient compression
def test_fp16_compression_hook_is_a_logged_no_op_without_cuda_ddp(caplog):
    from mae_dense.openmmlab.detection import Fp16CompressionHook

    logger = logging.getLogger('test_fp16_compression')
    hook = Fp16CompressionHook()
    with caplog.at_level(logging.INFO, logger='test_fp16_compression'):
        hook.before_train(SimpleNamespace(model=nn.Linear(4, 2), logger=logger))
    assert not hook.registered
    lines = [r.getMessage() for r in caplog.records if 'Fp16CompressionHook' in r.getMessage()]
    assert lines == ['Fp16CompressionHook: model is not wrapped in DDP; gradient compression is off']


def test_fp16_compression_hook_registers_on_gloo_ddp(tmp_path, caplog):
    """One-process gloo DDP: with the hook the all-reduced gradients are the fp32 ones rounded to fp16."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from mae_dense.openmmlab.detection import Fp16CompressionHook

    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "pg"}', rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        ref = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8))
        model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8))
        model.load_state_dict(ref.state_dict())
        logger = logging.getLogger('test_fp16_compression')
        with caplog.at_level(logging.INFO, logger='test_fp16_compression'):
            off = Fp16CompressionHook()  # default: CUDA only, so a CPU DDP model is left alone
            off.before_train(SimpleNamespace(model=DistributedDataParallel(model), logger=logger))
            ddp = DistributedDataParallel(model)
            hook = Fp16CompressionHook(cuda_only=False)
            hook.before_train(SimpleNamespace(model=ddp, logger=logger))
        assert not off.registered and hook.registered
        assert 'model is DDP on CPU' in caplog.text and 'all-reduced in fp16' in caplog.text

        x = torch.randn(64, 16) * 3
        ref(x).square().mean().backward()
        ddp(x).square().mean().backward()
        rounded = False
        for p, r in zip(model.parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, r.grad.half().float(), rtol=0, atol=0)
            rounded |= not torch.equal(p.grad, r.grad)
        assert rounded  # the gradients really went through fp16
    finally:
        dist.destroy_process_group()
