"""The transformer MLP: Linear -> GELU -> Linear."""

import torch
from torch import nn


class Mlp(nn.Module):
    """Two-layer MLP with parameter names ``fc1``/``fc2`` (timm/official MAE layout).

    Args:
        dim: input and output width.
        hidden_dim: hidden width (``mlp_ratio * dim``).
        act_layer: activation class (exact GELU, as in MAE, mmseg and ViTDet).
    """

    def __init__(self, dim: int, hidden_dim: int, act_layer: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
