"""Multi-head self-attention with an optional relative-position bias: SDPA, FlexAttention or eager.

* ``'sdpa'``: ``F.scaled_dot_product_attention`` with the bias as the additive mask. With a trainable bias
  its backward computes a (B, heads, N, N) bias gradient, and 1025 tokens (cls + 32x32) miss the kernels'
  alignment, so on a GPU it is no faster than eager for the BEiT bias.
* ``'flex'``: FlexAttention (compiled once per process) with a ``score_mod`` that reads the bias inside the
  kernel (``beit_score_mod``, ``decomposed_score_mod`` in :mod:`~mae_dense.layers.rel_pos`); gradients
  reach the BEiT table and ViTDet's ``rel_pos_h``/``rel_pos_w`` (and q) through the captured tensors.
  torch has no FlexAttention backward on CPU: there it serves inference only.
* ``'eager'``: the explicit softmax(q k^T * scale + bias) v (what FLOP counters and the references do).
* ``'auto'``: ``'flex'`` on CUDA when there is a relative-position bias, else ``'sdpa'`` (so on CPU exactly
  ``'sdpa'``).

SDPA must return the gradient of a trainable bias, and not every kernel behind it does (cuDNN's attention on
recent GPUs may leave the mask without one). The first training call of each shape and dtype checks it on
a small random copy (:func:`sdpa_returns_bias_grad`); where the gradient is missing or wrong, that layer
uses the eager path instead, and one warning line says so.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .rel_pos import (
    beit_relative_position_index,
    beit_score_mod,
    beit_table_rows,
    decomposed_rel_pos_bias,
    decomposed_rel_pos_terms,
    decomposed_score_mod,
    resize_beit_rel_pos_table,
)

ATTN_IMPLS = ('auto', 'sdpa', 'flex', 'eager')
_log = logging.getLogger(__name__)


def resolve_attn_impl(attn_impl: str, rel_pos: str | None, device: torch.device) -> str:
    """The implementation ``attn_impl`` stands for on ``device`` (``'auto'`` is the only one that varies)."""
    if attn_impl != 'auto':
        return attn_impl
    return 'flex' if device.type == 'cuda' and rel_pos is not None else 'sdpa'


@functools.cache
def _compiled_flex_attention(dynamic: bool | None) -> Callable:
    # Uncompiled, flex_attention runs a dense reference that materialises the scores; compiled, it is one
    # fused kernel (Triton on CUDA, a C++ template on CPU).
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=dynamic)


def _flex_kernel(q: torch.Tensor) -> Callable:
    """The compiled FlexAttention for ``q``; refuses CPU training, which torch's FlexAttention cannot do."""
    if q.device.type == 'cpu' and q.requires_grad:
        raise ConfigError(
            "attn_impl='flex' on CPU: torch's FlexAttention has no backward there; train with "
            "attn_impl='auto' or 'sdpa' (flex serves CPU inference only)"
        )
    # CUDA: shapes specialised, then made dynamic when they change (windows per chunk, batch). CPU: always
    # specialised, since torch 2.14's C++ flex template does not compile with dynamic shapes.
    return _compiled_flex_attention(False if q.device.type == 'cpu' else None)


def _call_flex_static(kernel: Callable, q, k, v, score_mod) -> torch.Tensor:
    # Inside a compiled block the kernel's frame is compiled with the block's settings, which turn shapes
    # dynamic on a change; torch 2.14's C++ flex template does not compile dynamic shapes.
    with torch._dynamo.config.patch(automatic_dynamic_shapes=False):
        return kernel(q, k, v, score_mod=score_mod)


# torch 2.14's C++ FlexAttention template takes captured tensors only as graph inputs, not as tensors
# computed in the same graph (the bias, inside a compiled block): on CPU the call leaves the block's graph
# and runs as its own compiled kernel (``recursive=False``: the kernel itself stays compiled).
_outside_compiled_graph = torch.compiler.disable(_call_flex_static, recursive=False)


@functools.cache
def _sdpa_returns_bias_grad(
    device: torch.device, dtype: torch.dtype, q_shape: tuple, q_stride: tuple, bias_shape: tuple
) -> bool:
    gen = torch.Generator(device=device).manual_seed(0)
    # q, k, v with the real ones' strides (views into one qkv projection): kernels are chosen by them too
    q, k, v = (
        torch.empty_strided(q_shape, q_stride, device=device, dtype=dtype).normal_(generator=gen)
        for _ in range(3)
    )
    q.requires_grad_(True)  # (the output has a graph even when the mask gets no gradient)
    bias = torch.randn(bias_shape, generator=gen, device=device, dtype=dtype)
    weights = torch.randn(q_shape, generator=gen, device=device, dtype=dtype)
    grads = []
    for fast in (True, False):
        b = bias.clone().requires_grad_(True)
        if fast:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=b)
        else:  # the eager formula, in fp32
            attn = (q.float() * q.shape[-1] ** -0.5) @ k.float().transpose(-2, -1) + b.float()
            out = attn.softmax(-1) @ v.float()
        (grad,) = torch.autograd.grad((out.float() * weights.float()).sum(), b, allow_unused=True)
        grads.append(grad)
    fast, eager = grads
    tol = 1e-4 if dtype == torch.float32 else 2e-2  # (half precision: its own rounding, not a missing grad)
    ok = fast is not None and bool(
        ((fast.float() - eager).abs().max() / eager.abs().max().clamp_min(1e-6)) <= tol
    )
    if not ok:
        _log.warning(
            f'attention: scaled_dot_product_attention on {device} ({str(dtype).replace("torch.", "")}, '
            f'{q_shape[-2]} tokens) returns no correct gradient for its additive mask; the layers with a '
            "trainable relative-position bias use attn_impl='eager' there instead, which does"
        )
    return ok


@torch.compiler.disable
def sdpa_returns_bias_grad(q: torch.Tensor, bias: torch.Tensor) -> bool:
    """Whether ``F.scaled_dot_product_attention`` returns the right gradient for an additive mask of
    ``bias``'s shape with queries like ``q`` on their device and dtype (checked once per shape and dtype on
    random data: one extra small attention forward and backward)."""
    with torch.enable_grad(), torch.autocast(q.device.type, enabled=False):
        return _sdpa_returns_bias_grad(q.device, q.dtype, tuple(q.shape), q.stride(), tuple(bias.shape))


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
        attn_impl: ``'sdpa'``, ``'flex'``, ``'eager'`` or ``'auto'`` (see the module docstring).
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
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f'attn_impl={attn_impl!r}: expected one of {ATTN_IMPLS}')
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

    def _flex(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """FlexAttention with the bias read inside the kernel: (B, heads, N, d) -> (B, heads, N, d).

        The captured bias tensors stay fp32 under autocast: the kernel adds them to fp32 scores, and its
        backward accumulates their gradients with atomic adds (in their dtype, in no fixed order, so on a
        GPU the table gradients vary in the last bits from run to run).
        """
        score_mod = None
        if self.rel_pos == 'beit':
            bias = self._beit_bias(hw, q.device)[0].float().contiguous()  # (heads, N, N), batch-free
            score_mod = beit_score_mod(bias)
        elif self.rel_pos == 'decomposed':
            bias_h, bias_w = decomposed_rel_pos_terms(q, self.rel_pos_h, self.rel_pos_w, hw, hw)
            score_mod = decomposed_score_mod(bias_h.float(), bias_w.float())  # (B, heads, N, kh), (.., kw)
        kernel = _flex_kernel(q)
        if q.device.type == 'cpu':
            return _outside_compiled_graph(kernel, q, k, v, score_mod)
        return kernel(q, k, v, score_mod=score_mod)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """x: (B, N, C) with N = h*w (+1 cls); hw: the token grid."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, d)
        impl = resolve_attn_impl(self.attn_impl, self.rel_pos, x.device)
        if impl == 'flex':
            x = self._flex(q, k, v, hw)
        else:
            bias = None
            if self.rel_pos == 'beit':
                bias = self._beit_bias(hw, x.device)
            elif self.rel_pos == 'decomposed':
                bias = decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, hw, hw)
            if bias is not None:
                bias = bias.to(q.dtype)  # (a float32 mask beside bf16 queries is misread by some kernels)
                if impl == 'sdpa' and bias.requires_grad and not sdpa_returns_bias_grad(q, bias):
                    impl = 'eager'  # (said once, by the check)
            if impl == 'sdpa':
                x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            else:
                attn = (q * self.scale) @ k.transpose(-2, -1)
                if bias is not None:
                    attn = attn + bias
                x = attn.softmax(dim=-1) @ v
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj(x)
