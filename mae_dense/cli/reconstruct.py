"""MAE reconstructions as a PNG grid: ``python tools/visualize_reconstruction.py CKPT IMAGES... --out grid.png``.

One row per image, four columns as in the official demo notebook: original | masked (removed patches at the
ImageNet mean, i.e. 0 after normalisation) | reconstruction | reconstruction with the visible patches pasted
back. The checkpoint is read through the project's safe loader and may be in the official layout (e.g.
``mae_visualize_vit_large.pth``, ``checkpoint-N.pth``) or this project's (``backbone.`` prefix).

A model trained with ``norm_pix_loss`` predicts per-patch normalised pixels; the official notebook shows
those as they are. ``--norm-pix`` un-normalises them with the mean and variance of each ORIGINAL patch (which
the model never saw for the removed patches: this shows structure, not recovered colour statistics).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..models.mae import MaskedAutoencoder, build_mae

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
COLUMNS = ('original', 'masked', 'reconstruction', 'reconstruction + visible')
_MAX_ERROR = 800  # characters of a key-mismatch message printed by the tool


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """Read an image, resize its short side to ``size`` (bicubic), centre-crop, ImageNet-normalise.

    Returns:
        (3, size, size) float32.
    """
    with Image.open(path) as im:
        im = im.convert('RGB')
        w, h = im.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, S, S) in [0, 1]
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3, S, S) ImageNet-normalised -> (S, S, 3) uint8, as the official ``show_image``."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    img = torch.clip((x * std + mean) * 255, 0, 255).round().to(torch.uint8)
    return img.permute(1, 2, 0).cpu().numpy()


def denormalize_pred(model: MaskedAutoencoder, imgs: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Undo the norm_pix target: pred * sqrt(var + 1e-6) + mean with the per-patch statistics of ``imgs``.

    Args:
        imgs: (N, 3, H, W) the original (normalised) images.
        pred: (N, L, p*p*3) per-patch normalised predictions.

    Returns:
        (N, L, p*p*3) in the images' (ImageNet-normalised) pixel space.
    """
    target = model.patchify(imgs)  # (N, L, p*p*3)
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)  # unbiased, as the loss
    return pred * (var + 1.0e-6) ** 0.5 + mean


@torch.no_grad()
def reconstruct(
    model: MaskedAutoencoder,
    imgs: torch.Tensor,
    mask_ratio: float,
    noise: torch.Tensor | None = None,
    norm_pix: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run the model and build the four panels of the official demo.

    Args:
        model: an MAE in eval mode.
        imgs: (N, 3, S, S) ImageNet-normalised.
        mask_ratio: fraction of patches removed.
        noise: optional (N, L) masking noise (fixes which patches are removed).
        norm_pix: un-normalise the prediction with each original patch's mean/variance.

    Returns:
        loss (scalar) and the panels (N, 3, S, S) keyed by :data:`COLUMNS`.
    """
    loss, pred, mask = model(imgs, mask_ratio, noise=noise)  # pred (N, L, p*p*3), mask (N, L)
    if norm_pix:
        pred = denormalize_pred(model, imgs, pred)
    hw = (imgs.shape[2] // model.patch_size, imgs.shape[3] // model.patch_size)
    y = model.unpatchify(pred, hw)  # (N, 3, S, S)
    m = model.unpatchify(mask.unsqueeze(-1).expand(-1, -1, pred.shape[-1]), hw)  # 1 = removed pixel
    masked = imgs * (1 - m)
    return loss, dict(zip(COLUMNS, (imgs, masked, y, masked + y * m)))


def make_grid(rows: Sequence[Sequence[np.ndarray]]) -> Image.Image:
    """Tile (S, S, 3) uint8 panels into one image: ``len(rows)`` rows, ``len(rows[0])`` columns."""
    s = rows[0][0].shape[0]
    grid = Image.new('RGB', (s * len(rows[0]), s * len(rows)))
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            grid.paste(Image.fromarray(panel), (c * s, r * s))
    return grid


def load_model(ckpt: str, arch: str, img_size: int | None, device: str) -> MaskedAutoencoder:
    """Build ``arch`` and load ``ckpt`` (official or ``backbone.`` layout) strictly."""
    from ..checkpoint import load_file, unwrap

    obj = load_file(ckpt)
    args = obj.get('args') if isinstance(obj, dict) else None
    if args is not None and getattr(args, 'norm_pix_loss', False):
        print(f'note: {ckpt} was trained with norm_pix_loss; pass --norm-pix to see un-normalised pixels')
    sd = unwrap(obj, str(ckpt))
    kwargs = {} if img_size is None else {'img_size': img_size}
    model = build_mae(arch, **kwargs)
    try:
        model.load_official(sd)
    except ValueError as exc:
        msg = str(exc)
        if len(msg) > _MAX_ERROR:
            msg = msg[:_MAX_ERROR] + ' ...'
        raise ValueError(f'{ckpt}: {msg} (does --arch {arch} match the checkpoint?)') from None
    return model.to(device).eval()


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Save a grid of MAE reconstructions (one row per image)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description='MAE reconstructions: original | masked | reconstruction | reconstruction + visible.',
    )
    parser.add_argument('ckpt', help='full MAE checkpoint (encoder + decoder), official or project layout')
    parser.add_argument('images', nargs='+', help='image files')
    parser.add_argument('--out', required=True, help='output PNG')
    parser.add_argument('--arch', default='large', metavar='{base,large,huge}', help='default: large')
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
    if args.arch not in ('base', 'large', 'huge', 'tiny-test'):  # tiny-test: hidden, for the tests
        parser.error(f"argument --arch: invalid choice: {args.arch!r} (choose from 'base', 'large', 'huge')")
    if not 0.0 <= args.mask_ratio < 1.0:
        parser.error(f'argument --mask-ratio: {args.mask_ratio} is not in [0, 1)')
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')

    from ..checkpoint import CheckpointError

    for path in (args.ckpt, *args.images):
        if not Path(path).is_file():
            print(f'error: {path}: no such file', file=sys.stderr)
            return 1
    try:
        model = load_model(args.ckpt, args.arch, args.img_size, device)
    except (CheckpointError, ValueError) as exc:
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
