"""MAE reconstructions as a PNG grid: ``python tools/visualize_reconstruction.py CKPT IMAGES... --out grid.png``.

One row per image, the four panels of the official demo notebook (:mod:`mae_dense.visualize`). The
checkpoint is read through the project's safe loader and may be in the official layout (e.g.
``mae_visualize_vit_large.pth``, ``checkpoint-N.pth``) or this project's (``backbone.`` prefix).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..errors import CheckpointError, ToolError
from ..visualize import COLUMNS, load_image, load_model, make_grid, reconstruct, to_uint8
from .common import add_mae_arch_args, mae_kwargs


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Save a grid of MAE reconstructions (one row per image)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description='MAE reconstructions: original | masked | reconstruction | reconstruction + visible.',
    )
    parser.add_argument('ckpt', help='full MAE checkpoint (encoder + decoder), official or project layout')
    parser.add_argument('images', nargs='+', help='image files')
    parser.add_argument('--out', required=True, help='output PNG')
    add_mae_arch_args(parser, default='large')
    parser.add_argument('--mask-ratio', type=float, default=0.75, help='fraction of patches removed')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random masks')
    parser.add_argument('--img-size', type=int, default=None, help='input side (default: 224)')
    parser.add_argument(
        '--norm-pix',
        action='store_true',
        help='the model predicts per-patch normalised pixels: un-normalise with the original patch statistics',
    )
    parser.add_argument('--device', default=None, help='default: cuda if available, else cpu')
    args = parser.parse_args(argv)
    if not 0.0 <= args.mask_ratio < 1.0:
        parser.error(f'argument --mask-ratio: {args.mask_ratio} is not in [0, 1)')
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')

    for path in (args.ckpt, *args.images):
        if not Path(path).is_file():
            print(f'error: {path}: no such file', file=sys.stderr)
            return 1
    try:
        arch, hint = mae_kwargs(args)
        model = load_model(args.ckpt, arch, args.img_size, device, hint)
    except (CheckpointError, ToolError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1

    size = model.img_size
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    rows = []
    for path in args.images:
        try:
            x = load_image(path, size).unsqueeze(0).to(device)  # (1, 3, S, S)
        except OSError as exc:
            print(f'error: {path}: not a readable image ({exc.__class__.__name__})', file=sys.stderr)
            return 1
        noise = torch.rand(1, model.num_patches, generator=gen).to(device)  # a fixed mask per image
        loss, panels = reconstruct(model, x, args.mask_ratio, noise, args.norm_pix)
        rows.append([to_uint8(panels[c][0]) for c in COLUMNS])
        print(f'{path}: loss {loss.item():.4f} on the removed patches')
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    make_grid(rows).save(out)
    print(f'wrote {out} ({len(rows)} rows: {" | ".join(COLUMNS)})')
    return 0
