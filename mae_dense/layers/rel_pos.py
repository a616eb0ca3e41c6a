"""Relative position biases: BEiT's per-layer table (mmseg BEiT/MAE) and ViTDet's decomposed form."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def beit_table_rows(window: tuple[int, int]) -> int:
    """Rows of a BEiT table for a (Wh, Ww) window: (2Wh-1)(2Ww-1) offsets plus 3 cls rows."""
    return (2 * window[0] - 1) * (2 * window[1] - 1) + 3


def beit_relative_position_index(
    hw: tuple[int, int], table_window: tuple[int, int], cls_token: bool = True
) -> torch.Tensor:
    """Index into a BEiT table built for ``table_window``, for a token grid ``hw`` (hw <= table_window).

    Patch-to-patch entries index the offset (dy, dx) at ``(dy + Wh-1) * (2Ww-1) + (dx + Ww-1)``; with a cls
    token the last three rows are cls->token (row 0), token->cls (column 0) and cls->cls.

    Returns:
        (N, N) long, N = h*w (+1 with cls).
    """
    h, w = hw
    wh, ww = table_window
    if h > wh or w > ww:
        raise ValueError(f'grid {hw} is larger than the table window {table_window}; resize the table first')
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
    coords = torch.stack([rows.flatten(), cols.flatten()])  # (2, h*w)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N): query minus key
    index = (rel[0] + wh - 1) * (2 * ww - 1) + (rel[1] + ww - 1)
    if not cls_token:
        return index
    n_off = (2 * wh - 1) * (2 * ww - 1)
    full = torch.zeros(h * w + 1, h * w + 1, dtype=torch.long)
    full[1:, 1:] = index
    full[0, :] = n_off  # cls -> token
    full[:, 0] = n_off + 1  # token -> cls
    full[0, 0] = n_off + 2  # cls -> cls
    return full


def resize_beit_rel_pos_table(table: torch.Tensor, src_window: tuple[int, int], dst_window: tuple[int, int]):
    """Interpolate a BEiT table to another window size; the 3 cls rows are kept as they are.

    The (2Wh-1, 2Ww-1) offset grid of each head is resampled bicubically with aligned corners, so the
    zero offset stays at the centre and the extreme offsets stay at the borders (scipy's interp2d, which
    mmseg used for this, is gone from scipy).

    Args:
        table: ((2Wh-1)(2Ww-1)+3, heads).
        src_window: the table's (Wh, Ww).
        dst_window: the wanted (Wh', Ww').

    Returns:
        ((2Wh'-1)(2Ww'-1)+3, heads).
    """
    if tuple(src_window) == tuple(dst_window):
        return table
    sh, sw = 2 * src_window[0] - 1, 2 * src_window[1] - 1
    dh, dw = 2 * dst_window[0] - 1, 2 * dst_window[1] - 1
    if table.shape[0] != sh * sw + 3:
        raise ValueError(
            f'table of {table.shape[0]} rows does not fit window {src_window} ({sh * sw + 3} rows)'
        )
    offsets, extra = table[: sh * sw], table[sh * sw :]
    heads = table.shape[1]
    grid = offsets.T.reshape(1, heads, sh, sw).float()
    grid = F.interpolate(grid, size=(dh, dw), mode='bicubic', align_corners=True)
    offsets = grid.reshape(heads, dh * dw).T.to(table.dtype)
    return torch.cat([offsets, extra], dim=0)


def resize_decomposed_rel_pos(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """Linearly interpolate a (L, head_dim) decomposed table to ``length`` rows (ViTDet)."""
    if rel_pos.shape[0] == length:
        return rel_pos
    out = F.interpolate(rel_pos.T[None].float(), size=length, mode='linear')
    return out[0].T.to(rel_pos.dtype)


def _rel_pos_along(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """(q_size, k_size, head_dim) embeddings of the query-key offsets along one axis."""
    rel_pos = resize_decomposed_rel_pos(rel_pos, 2 * max(q_size, k_size) - 1)
    # Scale coordinates when q and k differ in length (ViTDet); equal lengths give plain offsets.
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    rel = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[rel.long()]


def decomposed_rel_pos_bias(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_hw: tuple[int, int],
    k_hw: tuple[int, int],
) -> torch.Tensor:
    """ViTDet's decomposed relative position as an additive attention bias.

    Args:
        q: (B, heads, q_h*q_w, head_dim) UNSCALED queries.
        rel_pos_h, rel_pos_w: (2*S-1, head_dim) tables (interpolated when sizes differ).

    Returns:
        (B, heads, q_h*q_w, k_h*k_w) bias: bias[(y,x),(y',x')] = q . Rh[y-y'] + q . Rw[x-x'].
    """
    (qh, qw), (kh, kw) = q_hw, k_hw
    rh = _rel_pos_along(qh, kh, rel_pos_h).to(q.dtype)  # (qh, kh, d)
    rw = _rel_pos_along(qw, kw, rel_pos_w).to(q.dtype)  # (qw, kw, d)
    b, heads, _, d = q.shape
    r_q = q.reshape(b, heads, qh, qw, d)
    bias_h = torch.einsum('bnhwc,hkc->bnhwk', r_q, rh)  # (B, heads, qh, qw, kh)
    bias_w = torch.einsum('bnhwc,wkc->bnhwk', r_q, rw)  # (B, heads, qh, qw, kw)
    bias = bias_h[..., :, None] + bias_w[..., None, :]  # (B, heads, qh, qw, kh, kw)
    return bias.reshape(b, heads, qh * qw, kh * kw)
