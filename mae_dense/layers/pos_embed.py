"""Absolute position embeddings: the official MAE 2-D sin-cos table and resizing of learned tables."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """(M,) positions -> (M, dim) as [sin | cos], omega_k = 1 / 10000^(k / (dim/2))."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.reshape(-1).to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def get_2d_sincos_pos_embed(
    embed_dim: int, grid_h: int, grid_w: int, cls_token: bool = False
) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding in the official MAE layout.

    The FIRST half of the channels encodes the column (x) index and the second half the row (y) index
    (the official code builds ``np.meshgrid(grid_w, grid_h)``); mmpretrain puts the row first.

    Returns:
        (grid_h * grid_w [+1], embed_dim) float32; with ``cls_token`` a zero row comes first.
    """
    if embed_dim % 4:
        raise ValueError(f'embed_dim={embed_dim}: the 2-D sin-cos embedding needs a multiple of 4')
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing='ij')
    emb = torch.cat([_sincos_1d(embed_dim // 2, cols), _sincos_1d(embed_dim // 2, rows)], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, embed_dim, dtype=emb.dtype), emb], dim=0)
    return emb.float()


def resize_abs_pos_embed(
    pos_embed: torch.Tensor,
    new_hw: tuple[int, int],
    old_hw: tuple[int, int] | None = None,
    num_prefix: int = 1,
    mode: str = 'bicubic',
) -> torch.Tensor:
    """Resize the patch part of a (1, num_prefix + h*w, C) table to ``new_hw``; prefix rows are kept.

    Args:
        pos_embed: (1, num_prefix + h*w, C).
        new_hw: target grid (rows, cols).
        old_hw: source grid; inferred as square when omitted.
        num_prefix: leading rows that are not patches (cls token).
        mode: interpolation mode (bicubic, as mmseg, timm and ViTDet do).

    Returns:
        (1, num_prefix + new_h*new_w, C).
    """
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    n = grid.shape[1]
    if old_hw is None:
        side = int(round(n**0.5))
        if side * side != n:
            raise ValueError(f'position embedding with {n} patch rows is not a square grid; pass old_hw')
        old_hw = (side, side)
    if tuple(old_hw) == tuple(new_hw):
        return pos_embed
    c = grid.shape[-1]
    grid = grid.reshape(1, old_hw[0], old_hw[1], c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_hw, mode=mode, align_corners=False).to(pos_embed.dtype)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_hw[0] * new_hw[1], c)
    return torch.cat([prefix, grid], dim=1)
