"""FLOPs and parameters of MAE's encoder and decoder (fvcore): ``python tools/analysis/get_flops.py``.

Checks two claims of the paper (He et al., 2021) on the real model:

* Table 1(c): an encoder that also processes the mask tokens costs ~3.3x the FLOPs of MAE, whose encoder
  sees the visible patches only. The table compares whole pretraining models (the same decoder on both
  sides), so the ratio is (encoder on all tokens + decoder) / (encoder on visible tokens + decoder); the
  encoder-only ratio is printed next to it.
* Section 3: the default decoder (8 blocks, 512-d) costs ~9% of the encoder's FLOPs per token (both on
  all tokens).

fvcore counts one fused multiply-add as one FLOP and skips element-wise ops (softmax, GELU, additions). It
cannot see inside ``F.scaled_dot_product_attention``, so the models are built with ``attn_impl='eager'``,
and the attention matmuls it counts are checked against ``2 * depth * n^2 * C`` per image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.archs import get_arch, mae_config
from ..models.mae import MaskedAutoencoder
from .common import add_mae_arch_args, mae_kwargs

PAPER_ENCODER_WITH_MASK_TOKENS_RATIO = 3.3  # Table 1(c), ViT-L
PAPER_DECODER_PER_TOKEN_PCT = 9.0  # Section 3, ViT-L with the 8-block 512-d decoder


class _Encoder(nn.Module):
    """The MAE encoder on ``keep_idx`` (visible patches) or, with ``keep_idx=None``, on all patches."""

    def __init__(self, mae: MaskedAutoencoder) -> None:
        super().__init__()
        self.backbone = mae.backbone

    def forward(self, imgs: torch.Tensor, keep_idx: torch.Tensor | None = None) -> torch.Tensor:
        return self.backbone.forward_features(imgs, keep_idx=keep_idx)  # (B, 1+K or 1+L, C)


class _Decoder(nn.Module):
    """The MAE decoder: visible latents + mask tokens -> pixels of every patch."""

    def __init__(self, mae: MaskedAutoencoder) -> None:
        super().__init__()
        self.mae = mae

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        return self.mae.forward_decoder(latent, ids_restore)  # (B, L, p*p*3)


def _count(module: nn.Module, inputs: tuple) -> tuple[int, dict[str, int], dict[str, int]]:
    """fvcore's total, per-operator counts and skipped operators of one forward."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)  # fvcore uses torch.jit (deprecated in torch 2.x)
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(module, inputs)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        total = int(analysis.total())
    return total, dict(analysis.by_operator()), dict(analysis.unsupported_ops())


def _check_attention_counted(name: str, by_op: dict[str, int], expect: int) -> None:
    """The attention matmuls (q k^T and attn v) must be in fvcore's count: 2 * depth * n^2 * C per image."""
    got = by_op.get('matmul', 0)
    if got != expect:
        raise RuntimeError(
            f'{name}: fvcore counted {got} attention-matmul FLOPs, expected {expect} '
            '(is the model built with attn_impl="eager"?)'
        )


def _build_mae(arch: str | Mapping[str, Any], mask_ratio: float, img_size: int | None) -> MaskedAutoencoder:
    """The model whose FLOPs are counted: ``arch`` in eval mode, with eager attention (fvcore sees it)."""
    kwargs = dict(mae_config(arch) if isinstance(arch, str) else arch)
    if img_size is not None:
        kwargs['img_size'] = img_size
    with torch.no_grad():
        return MaskedAutoencoder(**{**kwargs, 'attn_impl': 'eager', 'mask_ratio': mask_ratio}).eval()


def _count_parts(
    mae: MaskedAutoencoder, keep: int, batch_size: int
) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """FLOPs of the encoder on the ``keep`` visible patches, on all patches, and of the decoder, each checked
    for its attention matmuls: ({part: {tokens, flops, flops_by_operator}}, operators fvcore skipped)."""
    enc = mae.backbone
    dim, depth = enc.embed_dim, enc.depth
    dec_dim = mae.decoder_embed.out_features
    dec_depth = len(mae.decoder_blocks)
    length = mae.num_patches

    imgs = torch.randn(batch_size, 3, mae.img_size, mae.img_size)
    keep_idx = torch.arange(keep).expand(batch_size, keep)  # which patches are visible does not matter
    ids_restore = torch.arange(length).expand(batch_size, length)
    latent = torch.randn(batch_size, 1 + keep, dim)

    encoder = _Encoder(mae).eval()
    decoder = _Decoder(mae).eval()
    parts = {}
    unsupported: dict[str, int] = {}
    for name, module, inputs, tokens, width, blocks in (
        ('encoder_visible', encoder, (imgs, keep_idx), 1 + keep, dim, depth),
        ('encoder_all', encoder, (imgs,), 1 + length, dim, depth),
        ('decoder', decoder, (latent, ids_restore), 1 + length, dec_dim, dec_depth),
    ):
        flops, by_op, skipped = _count(module, inputs)
        _check_attention_counted(name, by_op, batch_size * 2 * blocks * tokens * tokens * width)
        for op, n in skipped.items():
            unsupported[op] = unsupported.get(op, 0) + n
        parts[name] = {'tokens': tokens, 'flops': flops, 'flops_by_operator': by_op}
    return parts, unsupported


def _add_params(parts: dict[str, dict[str, Any]], mae: MaskedAutoencoder) -> None:
    """Each part's ``params``, and ``trainable_params``: the same less its position embedding."""
    enc = mae.backbone
    enc_params = sum(p.numel() for p in enc.parameters())
    dec_params = sum(p.numel() for n, p in mae.named_parameters() if not n.startswith('backbone.'))
    enc_fixed = enc.pos_embed.numel()
    dec_fixed = mae.decoder_pos_embed.numel()
    parts['encoder_visible'].update(params=enc_params, trainable_params=enc_params - enc_fixed)
    parts['encoder_all'].update(params=enc_params, trainable_params=enc_params - enc_fixed)
    parts['decoder'].update(params=dec_params, trainable_params=dec_params - dec_fixed)


def _summary(
    arch: str | Mapping[str, Any],
    mae: MaskedAutoencoder,
    mask_ratio: float,
    batch_size: int,
    parts: dict[str, dict[str, Any]],
    unsupported: dict[str, int],
) -> dict:
    """The result of :func:`measure`: the setting, the parts and the two ratios next to the paper's."""
    dim, depth = mae.backbone.embed_dim, mae.backbone.depth
    ev, ea, de = (parts[k]['flops'] for k in ('encoder_visible', 'encoder_all', 'decoder'))
    return {
        'arch': arch if isinstance(arch, str) else 'custom',
        'model': get_arch(arch).name
        if isinstance(arch, str)
        else f'ViT {dim}-d/{mae.patch_size}, {depth} blocks',
        'img_size': mae.img_size,
        'patch_size': mae.patch_size,
        'mask_ratio': mask_ratio,
        'num_patches': mae.num_patches,
        'visible_patches': parts['encoder_visible']['tokens'] - 1,  # less the class token
        'batch_size': batch_size,
        'decoder': f'{len(mae.decoder_blocks)} blocks x {mae.decoder_embed.out_features}-d',
        'flop_convention': 'fvcore: 1 fused multiply-add = 1 FLOP; element-wise ops not counted',
        'parts': parts,
        'pretrain_flops_mae': ev + de,
        'pretrain_flops_encoder_with_mask_tokens': ea + de,
        # Table 1(c): whole model (same decoder), encoder w/ [M] vs MAE encoder
        'ratio_with_mask_tokens': (ea + de) / (ev + de),
        'ratio_encoder_only': ea / ev,
        # decoder vs encoder, both per token on all 1+L tokens
        'decoder_per_token_pct': 100.0
        * (de / parts['decoder']['tokens'])
        / (ea / parts['encoder_all']['tokens']),
        'paper': {
            'ratio_with_mask_tokens': PAPER_ENCODER_WITH_MASK_TOKENS_RATIO,
            'decoder_per_token_pct': PAPER_DECODER_PER_TOKEN_PCT,
        },
        'uncounted_ops': unsupported,
    }


def measure(
    arch: str | Mapping[str, Any] = 'large',
    mask_ratio: float = 0.75,
    img_size: int | None = None,
    batch_size: int = 1,
) -> dict:
    """Count the FLOPs of the MAE encoder (visible tokens and all tokens) and decoder.

    Args:
        arch: ``'base'``, ``'large'`` or ``'huge'``, or the :class:`MaskedAutoencoder` arguments of a model
            of another size.
        mask_ratio: fraction of patches removed.
        img_size: input side; the architecture's default (224) when ``None``.
        batch_size: images per forward (the FLOPs scale linearly).

    Returns:
        A JSON-ready dict: per-part FLOPs (fvcore, 1 FMA = 1 FLOP) and parameters, the two ratios the paper
        reports, fvcore's per-operator counts and the operators it skipped.
    """
    mae = _build_mae(arch, mask_ratio, img_size)
    keep = int(mae.num_patches * (1 - mask_ratio))
    parts, unsupported = _count_parts(mae, keep, batch_size)
    _add_params(parts, mae)
    return _summary(arch, mae, mask_ratio, batch_size, parts, unsupported)


def format_report(r: dict) -> str:
    """The table and the two claims, as printed by the tool."""
    p = r['parts']
    big = p['encoder_all']['flops'] >= 1e9
    g, gname = (1e9, 'GFLOPs') if big else (1e6, 'MFLOPs')
    m, mname = (1e6, 'params (M)') if p['encoder_all']['params'] >= 1e6 else (1e3, 'params (K)')
    lines = [
        f'MAE {r["model"]} at {r["img_size"]}x{r["img_size"]}, mask ratio {r["mask_ratio"]}: '
        f'{r["num_patches"]} patches, {r["visible_patches"]} visible; batch {r["batch_size"]}',
        f'FLOPs: {r["flop_convention"]}',
        '',
        f'{"part":<42}{"tokens":>8}{gname:>10}{mname:>12}',
        f'{"encoder on visible patches (MAE)":<42}{p["encoder_visible"]["tokens"]:>8}'
        f'{p["encoder_visible"]["flops"] / g:>10.2f}{p["encoder_visible"]["params"] / m:>12.2f}',
        f'{"encoder with mask tokens (all patches)":<42}{p["encoder_all"]["tokens"]:>8}'
        f'{p["encoder_all"]["flops"] / g:>10.2f}{p["encoder_all"]["params"] / m:>12.2f}',
        f'{"decoder (" + r["decoder"] + ")":<42}{p["decoder"]["tokens"]:>8}'
        f'{p["decoder"]["flops"] / g:>10.2f}{p["decoder"]["params"] / m:>12.2f}',
        f'{"MAE: encoder (visible) + decoder":<42}{"":>8}{r["pretrain_flops_mae"] / g:>10.2f}',
        f'{"encoder with mask tokens + decoder":<42}{"":>8}'
        f'{r["pretrain_flops_encoder_with_mask_tokens"] / g:>10.2f}',
        '',
        f'encoder with mask tokens vs MAE (Table 1(c), encoder + decoder): paper says '
        f'{r["paper"]["ratio_with_mask_tokens"]:.1f}x, measured {r["ratio_with_mask_tokens"]:.2f}x '
        f'(encoder alone: {r["ratio_encoder_only"]:.2f}x)',
        f'decoder FLOPs per token vs encoder: paper says ~{r["paper"]["decoder_per_token_pct"]:.0f}%, '
        f'measured {r["decoder_per_token_pct"]:.1f}%',
    ]
    if r['arch'] != 'large':
        lines.append('(the paper states both numbers for ViT-L)')
    if r['uncounted_ops']:
        lines.append('not counted by fvcore: ' + ', '.join(sorted(r['uncounted_ops'])))
    return '\n'.join(lines)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Print the FLOPs table of one MAE architecture (and optionally write it as JSON)."""
    parser = argparse.ArgumentParser(
        prog=prog, description="FLOPs and parameters of MAE's encoder and decoder (fvcore, CPU)."
    )
    add_mae_arch_args(parser, default='large')
    parser.add_argument('--mask-ratio', type=float, default=0.75, help='fraction of patches removed')
    parser.add_argument('--img-size', type=int, default=None, help='input side (default: 224)')
    parser.add_argument('--json', metavar='OUT', help='also write the numbers to this JSON file')
    args = parser.parse_args(argv)
    if not 0.0 <= args.mask_ratio < 1.0:
        parser.error(f'argument --mask-ratio: {args.mask_ratio} is not in [0, 1)')
    torch.manual_seed(0)
    start = time.perf_counter()
    try:
        arch = mae_kwargs(args)[0] if args.config else (args.arch or args.default_arch)
        result = measure(arch, args.mask_ratio, args.img_size)
    except (ValueError, RuntimeError) as exc:  # ToolError is a RuntimeError
        print(f'error: {exc}', file=sys.stderr)
        return 1
    result['seconds'] = round(time.perf_counter() - start, 2)
    print(format_report(result))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + '\n')
        print(f'wrote {out}')
    return 0
