"""Forward+backward of the segmentation-mode ViT against mmseg's MAE backbone, same config, same run.

    python benchmarks/bench_backbone.py                      # CPU, reduced size (ViT-B depth 4, 224 px)
    python benchmarks/bench_backbone.py --device cuda --full  # ViT-B at 512 px, batch 8, bf16 autocast
    python benchmarks/bench_backbone.py --device cuda --full --compile   # + the blocks compiled

Rows: mmseg's MAE backbone, then ours with each attention (eager, SDPA with the bias as the mask, and on
CUDA FlexAttention with the trainable table read in the kernel; torch has no FlexAttention backward on
CPU); ``--compile`` adds the same with the blocks compiled. Prints seconds per iteration, images/s,
speed-up and (CUDA) peak-memory ratios against mmseg.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import device_name, dump, measure, report  # noqa: E402
from mae_dense.checkpoint import load_backbone  # noqa: E402
from mae_dense.models import VisionTransformer  # noqa: E402


def build(args, device):
    from mmseg.models.backbones import MAE

    kw = dict(
        img_size=args.size,
        patch_size=16,
        embed_dims=768,
        num_layers=args.depth,
        num_heads=12,
        mlp_ratio=4,
        out_indices=[args.depth - 1],
        init_values=1.0,
        drop_path_rate=0.1,
        norm_cfg=dict(type='LN', eps=1e-6),
    )
    ref = MAE(**kw).to(device)
    models = {'mmseg MAE (reference)': ref}
    can_flex = device.type == 'cuda' or args.forward_only  # no FlexAttention backward on CPU
    impls = args.impls or (['eager', 'sdpa', 'flex'] if can_flex else ['eager', 'sdpa'])
    for compile_ in (False, True) if args.compile else (False,):
        for impl in impls:
            ours = VisionTransformer(
                mode='seg',
                img_size=args.size,
                depth=args.depth,
                out_indices=[args.depth - 1],
                init_values=1.0,
                drop_path_rate=0.1,
                attn_impl=impl,
                compile=compile_,
            )
            load_backbone(ours, ref.state_dict(), log=False)
            models[f'mae-dense {impl}{" compiled" if compile_ else ""}'] = ours.to(device)
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--full', action='store_true', help='ViT-B, 512 px, batch 8 (GPU)')
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--depth', type=int, default=4)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--dtype', default=None, help='autocast dtype (bfloat16/float16); CUDA default bf16')
    parser.add_argument(
        '--impls',
        nargs='+',
        choices=('eager', 'sdpa', 'flex', 'auto'),
        help='default: all that can train here',
    )
    parser.add_argument('--compile', action='store_true', help='also each with its blocks compiled')
    parser.add_argument('--forward-only', action='store_true', help='inference (no grad): flex runs on CPU')
    parser.add_argument('--json')
    args = parser.parse_args()
    if args.full:
        args.size, args.depth, args.batch = 512, 12, 8
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == 'cuda' else None)
    torch.manual_seed(0)
    models = build(args, device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)

    def step_fn(model):
        def step():
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                out = model(x)
            sum(o.float().square().mean() for o in out).backward()

        def forward():
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                model(x)

        return forward if args.forward_only else step

    rows = {name: measure(step_fn(m), device, iters=args.iters) for name, m in models.items()}
    title = (
        f'seg-mode ViT {"forward (no grad)" if args.forward_only else "forward+backward"}: '
        f'depth {args.depth}, '
        f'{args.size} px, batch {args.batch}, {dtype or "fp32"}, {device_name(device)}'
    )
    rows = report(title, rows, 'mmseg MAE (reference)', per=args.batch)
    dump(args.json, dict(title=title, rows=rows))


if __name__ == '__main__':
    main()
