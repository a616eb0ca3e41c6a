"""Image to patch tokens."""

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection; any input size (a remainder smaller than a patch is dropped).

    Args:
        patch_size: patch side in pixels.
        in_chans: image channels.
        embed_dim: token width.
    """

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)  # (B, C, h, w)
        hw = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), hw  # (B, h*w, C), (h, w)
