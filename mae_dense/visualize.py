"""MAE reconstructions, as the official demo notebook shows them (plain PyTorch + PIL).

Four panels per image: original | masked (removed patches at the ImageNet mean, i.e. 0 after
normalisation) | reconstruction | reconstruction with the visible patches pasted back. Used by
``tools/visualize_reconstruction.py`` (:mod:`mae_dense.cli.reconstruct`) and by the suite's report.

A model trained with ``norm_pix_loss`` predicts per-patch normalised pixels; the official notebook shows
those as they are. :func:`denormalize_pred` un-normalises them with the mean and variance of each ORIGINAL
patch (which the model never saw for the removed patches: this shows structure, not recovered colour
statistics).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .models.mae import MaskedAutoencoder

__all__ = ['COLUMNS', 'denormalize_pred', 'load_image', 'load_model', 'make_grid', 'reconstruct', 'to_uint8']

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


def load_model(
    ckpt: str,
    arch: Mapping[str, Any],
    img_size: int | None,
    device: str,
    hint: str | None = None,
) -> MaskedAutoencoder:
    """Build the MAE and load ``ckpt`` (official or ``backbone.`` layout) strictly.

    Args:
        arch: the :class:`MaskedAutoencoder` arguments, of any size (``mae_config('large')`` for a
            standard one).
        hint: how the user chose ``arch`` (named in the error when the checkpoint does not fit).
    """
    from .checkpoint import CheckpointError, load_file, load_full_mae, unwrap

    obj = load_file(ckpt)
    args = obj.get('args') if isinstance(obj, dict) else None
    if args is not None and getattr(args, 'norm_pix_loss', False):
        print(f'note: {ckpt} was trained with norm_pix_loss; pass --norm-pix to see un-normalised pixels')
    sd = unwrap(obj, str(ckpt))
    kwargs = dict(arch)
    if img_size is not None:
        kwargs['img_size'] = img_size
    model = MaskedAutoencoder(**kwargs)
    try:
        load_full_mae(model, sd, str(ckpt))
    except CheckpointError as exc:
        msg = str(exc).removeprefix(f'{ckpt}: ')
        if len(msg) > _MAX_ERROR:
            msg = msg[:_MAX_ERROR] + ' ...'
        hint = hint or 'the model size'
        raise CheckpointError(f'{ckpt}: {msg} (does {hint} match the checkpoint?)') from None
    return model.to(device).eval()
