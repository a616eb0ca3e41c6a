"""Stochastic depth (per-sample residual-branch drop)."""

import torch
from torch import nn


class DropPath(nn.Module):
    """Drops the whole residual branch of a sample with probability ``p`` during training.

    Args:
        p: drop probability; the kept branches are scaled by ``1 / (1 - p)``.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p
        self.active = p > 0.0
        # The keep probability as a tensor too (not saved): inside torch.compile a Python float would be
        # baked into the graph, and every block (each with its own rate) would compile its own.
        self.register_buffer('keep_prob', torch.tensor(1.0 - p), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active or not self.training:
            return x
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        if torch.compiler.is_compiling():  # the rate is a graph input: one graph serves all blocks
            keep = self.keep_prob.to(x.dtype)
            return x * x.new_empty(shape).bernoulli_(keep) / keep
        keep = 1.0 - self.p
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f'p={self.p}'
