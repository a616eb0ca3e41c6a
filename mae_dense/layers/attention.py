"""Multi-head self-attention through SDPA, with an optional relative-position bias as the additive mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .rel_pos import (
    beit_relative_position_index,
    beit_table_rows,
    decomposed_rel_pos_bias,
    resize_beit_rel_pos_table,
)


class Attention(nn.Module):
    """Self-attention with ``qkv``/``proj`` parameter names (timm/official MAE layout).

    Args:
        dim: token width.
        num_heads: attention heads.
        qkv_bias: bias on q, k and v.
        rel_pos: ``None``, ``'beit'`` (per-layer table + 3 cls rows, mmseg BEiT/MAE) or ``'decomposed'``
            (ViTDet ``rel_pos_h``/``rel_pos_w``).
        rel_pos_size: token grid (rows, cols) the tables are built for.
        cls_token: whether the first token is a cls token (BEiT table only).
        attn_impl: ``'sdpa'`` (``F.scaled_dot_product_attention``) or ``'eager'`` (explicit softmax).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        rel_pos: str | None = None,
        rel_pos_size: tuple[int, int] | None = None,
        cls_token: bool = True,
        attn_impl: str = 'sdpa',
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim={dim} is not divisible by num_heads={num_heads}')
        if attn_impl not in ('sdpa', 'eager'):
            raise ValueError(f"attn_impl={attn_impl!r}: expected 'sdpa' or 'eager'")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.attn_impl = attn_impl
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos = rel_pos
        self.cls_token = cls_token
        if rel_pos is not None and rel_pos_size is None:
            raise ValueError(f'rel_pos={rel_pos!r} needs rel_pos_size')
        self.rel_pos_size = tuple(rel_pos_size) if rel_pos_size else None
        if rel_pos == 'beit':
            # Zero-initialised, as mmseg's MAE does (BEiT checkpoints bring their own).
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros(beit_table_rows(self.rel_pos_size), num_heads)
            )
            self._index_cache: dict[tuple[int, int, str], torch.Tensor] = {}
        elif rel_pos == 'decomposed':
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * self.rel_pos_size[0] - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * self.rel_pos_size[1] - 1, self.head_dim))
        elif rel_pos is not None:
            raise ValueError(f"rel_pos={rel_pos!r}: expected None, 'beit' or 'decomposed'")

    def _beit_bias(self, hw: tuple[int, int], device: torch.device) -> torch.Tensor:
        """(1, heads, N, N): indexed from the table when the grid fits it, else from a resized table."""
        table, window = self.relative_position_bias_table, self.rel_pos_size
        if hw[0] > window[0] or hw[1] > window[1]:
            window = (max(hw[0], window[0]), max(hw[1], window[1]))
            table = resize_beit_rel_pos_table(table, self.rel_pos_size, window)
        key = (hw[0], hw[1], str(device), window)
        index = self._index_cache.get(key)
        if index is None:
            index = beit_relative_position_index(hw, window, self.cls_token).to(device)
            self._index_cache[key] = index
        n = index.shape[0]
        return table[index.view(-1)].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """x: (B, N, C) with N = h*w (+1 cls); hw: the token grid."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, d)
        bias = None
        if self.rel_pos == 'beit':
            bias = self._beit_bias(hw, x.device)
        elif self.rel_pos == 'decomposed':
            bias = decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, hw, hw)
        if bias is not None:
            bias = bias.to(q.dtype)
        if self.attn_impl == 'sdpa':
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if bias is not None:
                attn = attn + bias
            x = attn.softmax(dim=-1) @ v
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj(x)
