"""Relative position biases: BEiT's per-layer table (mmseg BEiT/MAE) and ViTDet's decomposed form."""

from __future__ import annotations

from collections.abc import Callable

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


def decomposed_rel_pos_terms(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_hw: tuple[int, int],
    k_hw: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two small factors of ViTDet's decomposed relative position bias.

    Args:
        q: (B, heads, q_h*q_w, head_dim) UNSCALED queries.
        rel_pos_h, rel_pos_w: (2*S-1, head_dim) tables (interpolated when sizes differ).

    Returns:
        bias_h (B, heads, q_h*q_w, k_h) = q . Rh[y - y'] and bias_w (B, heads, q_h*q_w, k_w) = q . Rw[x - x'];
        the bias of query (y, x) and key (y', x') is bias_h[..., y'] + bias_w[..., x'].
    """
    (qh, qw), (kh, kw) = q_hw, k_hw
    rh = _rel_pos_along(qh, kh, rel_pos_h).to(q.dtype)  # (qh, kh, d)
    rw = _rel_pos_along(qw, kw, rel_pos_w).to(q.dtype)  # (qw, kw, d)
    b, heads, _, d = q.shape
    r_q = q.reshape(b, heads, qh, qw, d)
    bias_h = torch.einsum('bnhwc,hkc->bnhwk', r_q, rh)  # (B, heads, qh, qw, kh)
    bias_w = torch.einsum('bnhwc,wkc->bnhwk', r_q, rw)  # (B, heads, qh, qw, kw)
    return bias_h.reshape(b, heads, qh * qw, kh), bias_w.reshape(b, heads, qh * qw, kw)


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
    bias_h, bias_w = decomposed_rel_pos_terms(q, rel_pos_h, rel_pos_w, q_hw, k_hw)
    b, heads, n, kh = bias_h.shape
    bias = bias_h[..., :, None] + bias_w[..., None, :]  # (B, heads, N, kh, kw)
    return bias.reshape(b, heads, n, kh * bias_w.shape[-1])


# FlexAttention score_mods: the bias is read inside the attention kernel, element by element, so neither the
# forward nor the backward materialises a (B, heads, N, N) bias; gradients reach the captured tensors.
ScoreMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def beit_score_mod(bias: torch.Tensor) -> ScoreMod:
    """score + bias[head, q, kv] for a batch-independent (heads, N, N) BEiT bias (``table[index]``).

    The table is gathered once per call into (heads, N, N) rather than read as ``table[index[q, kv]]``
    inside the kernel: the gradient of a captured tensor is accumulated with atomic adds, and thousands of
    (q, kv) pairs share each table row (one per offset), while each (head, q, kv) entry is shared only by
    the B images of the batch. Autograd then scatters the (heads, N, N) gradient into the table.
    """

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + bias[h, q_idx, kv_idx]

    return score_mod


def decomposed_score_mod(bias_h: torch.Tensor, bias_w: torch.Tensor) -> ScoreMod:
    """score + bias_h[b, head, q, kv // k_w] + bias_w[b, head, q, kv % k_w] (ViTDet, keys in row-major order).

    The factors of :func:`decomposed_rel_pos_terms` are (B, heads, N, k_h) and (B, heads, N, k_w), a
    fraction of the (B, heads, N, N) bias; segment-anything-fast fuses the same two factors into its Triton
    attention kernel (inference only); here the kernel is FlexAttention's, with a backward.
    """
    kw = bias_w.shape[-1]

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + bias_h[b, h, q_idx, kv_idx // kw] + bias_w[b, h, q_idx, kv_idx % kw]

    return score_mod
