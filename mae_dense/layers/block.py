"""The pre-norm transformer block, with optional layer scale and window attention."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from ..errors import ConfigError
from .attention import Attention
from .drop_path import DropPath
from .mlp import Mlp
from .window import window_partition, window_unpartition


class Block(nn.Module):
    """x += drop_path(gamma_1 * attn(norm1(x))); x += drop_path(gamma_2 * mlp(norm2(x))).

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / dim.
        drop_path: stochastic-depth rate of this block.
        init_values: layer-scale init (``gamma_1``/``gamma_2``); ``None`` for no layer scale.
        norm_layer: normalisation class, called with ``dim``.
        window_size: > 0 for ViTDet window attention (tokens must carry no cls token).
        **attn_kwargs: keyword arguments of :class:`Attention` (``qkv_bias``, ``rel_pos``, ``rel_pos_size``,
            ``cls_token``, ``attn_impl``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        init_values: float | None = None,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        window_size: int = 0,
        **attn_kwargs: Any,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, **attn_kwargs)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)
        if init_values is not None:
            self.gamma_1 = nn.Parameter(init_values * torch.ones(dim))
            self.gamma_2 = nn.Parameter(init_values * torch.ones(dim))
        else:
            self.gamma_1 = self.gamma_2 = None

    def _attend(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        if not self.window_size:
            return self.attn(x, hw)
        b, n, c = x.shape
        windows, padded = window_partition(x.view(b, hw[0], hw[1], c), self.window_size)
        windows = self.attn(windows, (self.window_size, self.window_size))
        return window_unpartition(windows, self.window_size, padded, hw).view(b, n, c)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """x: (B, N, C); hw: the token grid (rows, cols) of the patch tokens."""
        y = self._attend(self.norm1(x), hw)
        if self.gamma_1 is not None:
            y = self.gamma_1 * y
        x = x + self.drop_path(y)
        y = self.mlp(self.norm2(x))
        if self.gamma_2 is not None:
            y = self.gamma_2 * y
        return x + self.drop_path(y)


def compile_blocks(blocks: Iterable[nn.Module], options: bool | dict | None) -> None:
    """Regional ``torch.compile``: compile each block in place (``nn.Module.compile``), or nothing.

    A block is small and all blocks share its code, so compilation is quick and one graph serves every
    block of the same kind; parameter names and checkpoints are unchanged. Shapes are static
    (``dynamic=False``): token grids do not change in training or sliding-window inference (the crop, the
    LSJ-padded 1024 square), each kind of block (MAE encoder/decoder, windowed/global, train/eval) gets
    its own specialised graph, and each distinct number of windows in a chunk compiles once
    (``test_cfg.max_batch`` bounds them).

    Args:
        blocks: the modules to compile.
        options: ``False``/``None`` (eager), ``True`` (``dynamic=False``, torch's other defaults) or
            ``torch.compile`` keyword arguments over those, e.g. ``dict(mode='max-autotune-no-cudagraphs')``.
    """
    if options is None or options is False:
        return
    if options is True:
        options = {}
    if not isinstance(options, dict):
        raise ConfigError(f'compile={options!r}: expected True, False or a dict of torch.compile arguments')
    allowed = set(inspect.signature(torch.compile).parameters) - {'model'}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f'compile={options!r}: unknown torch.compile arguments {unknown}; expected {sorted(allowed)}'
        )
    # Every kind and chunk size above compiles once per code object; torch's default limit of 8 would
    # leave the later ones running uncompiled.
    config = torch._dynamo.config
    name = 'recompile_limit' if hasattr(config, 'recompile_limit') else 'cache_size_limit'
    setattr(config, name, max(getattr(config, name), 32))
    for block in blocks:
        block.compile(**{'dynamic': False, **options})


def run_block(blk: nn.Module, x: torch.Tensor, hw: tuple[int, int], checkpointing: bool) -> torch.Tensor:
    """``blk(x, hw)``; with ``checkpointing`` (and gradients on) its activations are recomputed in backward."""
    if checkpointing and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(blk, x, hw, use_reentrant=False)
    return blk(x, hw)


def init_linear_and_norm(modules: Iterable[nn.Module]) -> None:
    """The MAE/JAX-ViT init of ``modules``: xavier-uniform Linear weights and zero biases, LayerNorm (1, 0)."""
    for m in modules:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
