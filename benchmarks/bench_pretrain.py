"""MAE pretraining step, images/s: ours against the paper's Table 2 baseline and an official-style model.

* ``mae-dense``: the project's MaskedAutoencoder (encoder on the 25% visible patches, SDPA attention).
* ``encoder with mask tokens``: the same model, but the encoder sees all patches with a mask token in place
  of the removed ones (the paper's Table 2 baseline; 2.8x slower for ViT-L in the paper).
* ``official (timm Block, eager)``: the official models_mae.py structure with timm ``Block`` and eager
  (non-fused) attention, i.e. what the reference repository runs on a current timm with fused_attn off.

* ``--compile``/``--fused`` add a row: mae-dense with its blocks compiled (regional ``torch.compile``)
  and/or the fused AdamW (one kernel for all parameters), same weights and masks.

One step = forward, loss, backward, AdamW update (torch's default AdamW: for-each on CUDA). MFU (CUDA)
uses fvcore's FLOPs of the MAE forward (x2 for multiply-add, x3 for forward+backward) against the H200's
989 TFLOP/s dense bf16 peak (H100 SXM: the same 989).

    python benchmarks/bench_pretrain.py                          # CPU: tiny model
    python benchmarks/bench_pretrain.py --compile --fused        # CPU: + the compiled/fused row
    python benchmarks/bench_pretrain.py --device cuda --arch large --batch 128 --compile --fused
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import device_name, dump, measure, report  # noqa: E402
from mae_dense.layers import get_2d_sincos_pos_embed  # noqa: E402
from mae_dense.models.mae import MaskedAutoencoder  # noqa: E402

PEAK_BF16 = 989e12  # H200 SXM dense bf16 (spec sheet)


class MaskTokenEncoderMAE(MaskedAutoencoder):
    """Table 2 baseline: mask tokens go through the encoder (all 1+L tokens), the decoder needs no unshuffle."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.enc_mask_token = nn.Parameter(torch.zeros(1, 1, self.backbone.embed_dim))

    def forward(self, imgs, mask_ratio=None, noise=None):
        vit = self.backbone
        n = imgs.shape[0]
        ids_keep, mask, _ = self.random_masking(n, self.num_patches, self.mask_ratio, imgs.device)
        x, hw = vit.patch_embed(imgs)  # (N, L, C)
        x = torch.where(mask.bool()[..., None], self.enc_mask_token.to(x.dtype), x) + vit.pos_embed[:, 1:]
        x = torch.cat([(vit.cls_token + vit.pos_embed[:, :1]).expand(n, -1, -1), x], 1)
        for blk in vit.blocks:
            x = blk(x, hw)
        x = self.decoder_embed(vit.norm(x)) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x, hw)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        return self.forward_loss(imgs, pred, mask), pred, mask


class OfficialStyleMAE(nn.Module):
    """The official models_mae.py structure on timm ``Block`` with eager attention (fused_attn off)."""

    def __init__(
        self,
        img_size=224,
        patch_size=16,
        embed_dim=1024,
        depth=24,
        num_heads=16,
        decoder_embed_dim=512,
        decoder_depth=8,
        decoder_num_heads=16,
        mlp_ratio=4.0,
        norm_pix_loss=True,
        mask_ratio=0.75,
    ):
        super().__init__()
        from functools import partial

        from timm.models.vision_transformer import Block, PatchEmbed

        norm = partial(nn.LayerNorm, eps=1e-6)
        self.p, self.mask_ratio, self.norm_pix_loss = patch_size, mask_ratio, norm_pix_loss
        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim)
        g = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer('pos_embed', get_2d_sincos_pos_embed(embed_dim, g, g, True)[None])
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(depth)
        )
        self.norm = norm(embed_dim)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.register_buffer(
            'decoder_pos_embed', get_2d_sincos_pos_embed(decoder_embed_dim, g, g, True)[None]
        )
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm)
            for _ in range(decoder_depth)
        )
        self.decoder_norm = norm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * 3)
        for m in self.modules():
            if hasattr(m, 'attn') and hasattr(m.attn, 'fused_attn'):
                m.attn.fused_attn = False  # eager softmax(QK^T)V, as the reference code was written

    def forward(self, imgs):
        n, p = imgs.shape[0], self.p
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]
        length = x.shape[1]
        keep = int(length * (1 - self.mask_ratio))
        ids_shuffle = torch.argsort(torch.rand(n, length, device=imgs.device), 1)
        ids_restore = torch.argsort(ids_shuffle, 1)
        x = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, x.shape[-1]))
        mask = torch.ones(n, length, device=imgs.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        x = torch.cat([(self.cls_token + self.pos_embed[:, :1]).expand(n, -1, -1), x], 1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))
        tokens = torch.cat([x[:, 1:], self.mask_token.expand(n, length - keep, -1).to(x.dtype)], 1)
        tokens = torch.gather(tokens, 1, ids_restore[..., None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], tokens], 1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        h = imgs.shape[2] // p
        target = imgs.reshape(n, 3, h, p, h, p).permute(0, 2, 4, 3, 5, 1).reshape(n, h * h, p * p * 3)
        if self.norm_pix_loss:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
        loss = ((pred.float() - target) ** 2).mean(-1)
        return (loss * mask).sum() / mask.sum()


SIZES = {
    'tiny': dict(
        img_size=64,
        patch_size=8,
        embed_dim=96,
        depth=4,
        num_heads=3,
        decoder_embed_dim=64,
        decoder_depth=2,
        decoder_num_heads=4,
    ),
    'base': dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12),
    'large': dict(img_size=224, patch_size=16, embed_dim=1024, depth=24, num_heads=16),
    'huge': dict(img_size=224, patch_size=14, embed_dim=1280, depth=32, num_heads=16),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--arch', default='tiny', choices=sorted(SIZES))
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--compile', action='store_true', help='extra row: mae-dense with compiled blocks')
    parser.add_argument('--fused', action='store_true', help='extra row: mae-dense with the fused AdamW')
    parser.add_argument('--json')
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == 'cuda'
    kw = dict(SIZES[args.arch], norm_pix_loss=True, mask_ratio=0.75)
    torch.manual_seed(0)
    impls = {
        'official (timm Block, eager)': OfficialStyleMAE(**kw),
        'encoder with mask tokens': MaskTokenEncoderMAE(**kw),
        'mae-dense': MaskedAutoencoder(**kw),
    }
    fast = ', '.join(['compiled'] * args.compile + ['fused AdamW'] * args.fused)
    if fast:
        impls[f'mae-dense ({fast})'] = MaskedAutoencoder(**kw, compile=args.compile)
        impls[f'mae-dense ({fast})'].load_state_dict(impls['mae-dense'].state_dict())
    x = torch.randn(args.batch, 3, kw['img_size'], kw['img_size'], device=device)

    def step_fn(model):
        model.to(device).train()
        fused = dict(fused=True) if args.fused and model is impls.get(f'mae-dense ({fast})') else {}
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05, **fused)

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                out = model(x)
            loss = out[0] if isinstance(out, tuple) else out
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    rows = {}
    for name, model in impls.items():
        rows[name] = measure(step_fn(model), device, iters=args.iters)
        model.cpu()
        if cuda:
            torch.cuda.empty_cache()
    title = (
        f'MAE pretraining step ({args.arch}, {kw["img_size"]} px, mask 0.75, batch {args.batch}, '
        f'{"bf16 autocast" if cuda else "fp32"}, {device_name(device)})'
    )
    rows = report(title, rows, 'official (timm Block, eager)', per=args.batch)
    if cuda and args.arch != 'tiny':
        from mae_dense.cli.flops import measure as count

        macs = count(args.arch, 0.75, kw['img_size'], 1)['pretrain_flops_mae']  # fvcore: multiply-adds
        flops_per_img = 3 * 2 * macs
        for name in [n for n in rows if n.startswith('mae-dense') or n.startswith('official')]:
            ips = args.batch / rows[name]['seconds']
            rows[name]['mfu'] = ips * flops_per_img / PEAK_BF16
            print(f'  MFU {name}: {100 * rows[name]["mfu"]:.1f}% ({ips * flops_per_img / 1e12:.0f} TFLOP/s)')
    dump(args.json, dict(title=title, rows=rows))


if __name__ == '__main__':
    main()
