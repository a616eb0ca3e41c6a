"""Frozen-backbone probes (plain PyTorch): the frozen ViT and the linear heads of a learning-rate sweep.

The linear semantic-segmentation protocol of DINOv2 (Oquab et al. 2023, Sec. 7.4 and its released ADE20K
"linear" configs): the backbone is frozen; the final LayerNorm is applied to the patch tokens of the last
block (or of each of the last four blocks, concatenated); a BatchNorm and a 1x1 convolution turn them into
per-patch class logits, which are upsampled bilinearly to the label resolution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .timm_backbone import TimmViT
from .vit import VisionTransformer


class _Frozen:
    """What makes a backbone a probe's: always in eval mode, no gradient, the final-normed maps of its
    ``out_indices`` concatenated along channels."""

    embed_dim: int
    out_indices: tuple[int, ...]

    @property
    def feature_channels(self) -> int:
        return self.embed_dim * len(self.out_indices)

    def train(self, mode: bool = True):
        """Always eval mode (the runner calls ``model.train()`` on the whole segmentor)."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            maps = self.forward_intermediates(x, norm_all=True)
        return torch.cat(maps, dim=1)  # (B, L*C, h, w)


class FrozenViT(_Frozen, VisionTransformer):
    """A :class:`VisionTransformer` that never changes: no gradient, always in eval mode.

    ``forward`` returns the maps of ``layers`` (block indices, negative from the end), each through the
    final norm, concatenated along channels: (B, len(layers) * C, H/p, W/p).

    Args:
        layers: blocks whose patch tokens are read (``(-1,)``: the last; ``(-4, -3, -2, -1)``: the last four).
        init_seed: seed of the random initialisation (used as is when ``pretrained`` is ``None``). The
            initialisation runs on the CPU generator and leaves the global random state untouched, so the
            same seed gives the same random backbone on any device and in any process.
        **kwargs: :class:`VisionTransformer` arguments (``mode`` defaults to ``'mae'``: the pretrained
            encoder as it is, with its final norm).
    """

    def __init__(self, layers: Sequence[int] = (-1,), init_seed: int = 0, **kwargs) -> None:
        if 'out_indices' in kwargs or kwargs.get('final_norm') is False:
            raise ValueError(f'FrozenViT: pass layers={list(layers)}, not out_indices/final_norm=False')
        super().__init__(out_indices=list(layers), final_norm=True, **kwargs)
        self.layers = tuple(layers)
        self.init_seed = init_seed
        self.requires_grad_(False)
        super().train(False)

    def init_weights(self) -> None:
        """Seeded random init on the CPU, then ``pretrained`` through the project's loader."""
        device = self.pos_embed.device
        self.to('cpu')
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.init_seed)
            for module in self.modules():  # what the ViT's own init leaves as built (e.g. conv biases)
                if module is not self and hasattr(module, 'reset_parameters'):
                    module.reset_parameters()
            super().init_weights()
        self.to(device)
        self.requires_grad_(False)


class FrozenTimmViT(_Frozen, TimmViT):
    """A :class:`~mae_dense.models.timm_backbone.TimmViT` as the probe's frozen backbone: the same reading
    as :class:`FrozenViT` (the patch tokens of ``layers`` after the model's final norm, concatenated).

    Args:
        model_name, timm_kwargs, stride, pretrained, init_cfg: as :class:`TimmViT`.
        layers: blocks whose patch tokens are read (negative from the end).
        init_seed: the random backbone's seed (built under it, the global random state untouched).
    """

    def __init__(self, model_name: str, layers: Sequence[int] = (-1,), init_seed: int = 0, **kwargs) -> None:
        if 'out_indices' in kwargs or 'norm' in kwargs:
            raise ValueError(f'FrozenTimmViT: pass layers={list(layers)}, not out_indices/norm')
        super().__init__(model_name, out_indices=list(layers), norm=True, init_seed=init_seed, **kwargs)
        self.layers = tuple(layers)
        self.init_seed = init_seed
        self.requires_grad_(False)
        super().train(False)

    def init_weights(self) -> None:
        super().init_weights()
        self.requires_grad_(False)


FROZEN_BACKBONES = (FrozenViT, FrozenTimmViT)


class LinearProbeHead(nn.Module):
    """BatchNorm + 1x1 conv on frozen features; logits upsampled bilinearly (``align_corners=False``).

    Initialised as mmseg's decode heads: conv weight N(0, 0.01), bias 0; BN weight 1, bias 0.
    """

    def __init__(
        self, in_channels: int, num_classes: int, norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d
    ) -> None:
        super().__init__()
        self.bn = norm_layer(in_channels)
        self.conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)
        nn.init.normal_(self.conv.weight, std=0.01)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, C_in, h, w) -> (B, num_classes, h, w), or at ``size`` when given."""
        logits = self.conv(self.bn(x))
        if size is not None and tuple(logits.shape[2:]) != tuple(size):
            logits = F.interpolate(logits, size=size, mode='bilinear', align_corners=False)
        return logits


class ProbeHeads(nn.Module):
    """One :class:`LinearProbeHead` per learning rate of a sweep, all reading the same features.

    The heads share nothing, so training them together on one batch (summed losses) gives each the
    gradients it would get alone: one pass over the features serves the whole sweep.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        lrs: Sequence[float],
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if not lrs or any(float(lr) <= 0 for lr in lrs):
            raise ValueError(f'lrs={list(lrs)}: expected one or more positive learning rates')
        self.lrs = tuple(float(lr) for lr in lrs)
        self.heads = nn.ModuleList(LinearProbeHead(in_channels, num_classes, norm_layer) for _ in self.lrs)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, C_in, h, w) -> (num_heads, B, num_classes, h, w) (or at ``size``)."""
        return torch.stack([head(x, size) for head in self.heads])
