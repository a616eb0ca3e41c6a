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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f'p={self.p}'
