"""ViTDet's simple feature pyramid (plain PyTorch): strides 4-32 from the ViT's single stride-16 map.

Follows detectron2's ``SimpleFeaturePyramid`` (``detectron2/modeling/backbone/vit.py``) with
``scale_factors=(4, 2, 1, 0.5)``, ``norm='LN'`` and ``top_block=LastLevelMaxPool()``: the stride-4 level is
two 2x transposed convolutions (channel LayerNorm and GELU between them), stride 8 one, stride 16 the map
itself, stride 32 a 2x2 max-pool; every level then goes through a 1x1 and a 3x3 convolution, each without
bias and followed by a channel LayerNorm; P6 is a stride-2 subsampling (max-pool, kernel 1) of the last level.

Parameter names are detectron2's (``simfp_{2..5}.{i}`` with ``.norm`` inside the convolutions), so the neck
of a detectron2 ViTDet checkpoint maps onto this one by renaming ``backbone.simfp_`` to ``neck.simfp_``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['ConvNorm', 'LayerNorm2d', 'SimpleFPN']


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW map, at every pixel (detectron2's ``LayerNorm``).

    Deliberately not an ``nn.LayerNorm`` subclass, like detectron2's: weight-decay rules that recognise norm
    layers by torch type (detectron2's ``get_default_optimizer_params``, our ``'vitdet'`` policy) then treat
    it as detectron2 does, i.e. its parameters are decayed.

    Args:
        num_channels: C.
        eps: added to the variance (detectron2: 1e-6).
    """

    _abbr_ = 'ln'  # the sub-module name mmcv's ConvModule gives it (as for nn.LayerNorm)

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last F.layer_norm is the same normalisation as detectron2's explicit mean/variance, and
        # autocast runs it in fp32 (the explicit form would compute the variance in fp16 under AMP).
        x = F.layer_norm(x.permute(0, 2, 3, 1), (self.num_channels,), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f'{self.num_channels}, eps={self.eps}'


class ConvNorm(nn.Conv2d):
    """Bias-free convolution followed by a channel LayerNorm (detectron2's ``Conv2d(norm=LayerNorm)``)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, eps: float = 1e-6
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.norm = LayerNorm2d(out_channels, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class SimpleFPN(nn.Module):
    """Simple feature pyramid of ViTDet.

    Args:
        in_channels: channels of the backbone map (768 for ViT-B, 1024 for ViT-L).
        out_channels: channels of every output level (256).
        scale_factors: resampling of the input map per level: 4, 2, 1 (identity) and 0.5 are supported.
        num_outs: output levels; those beyond ``len(scale_factors)`` are successive stride-2 subsamplings
            of the last level (5 levels = strides 4..64 for the RPN).
        norm_eps: epsilon of the channel LayerNorms.
        in_index: which backbone output to use (a ViTDet backbone returns one map: ``-1``).
        input_stride: stride of the backbone map, for the level names (``simfp_{log2 stride}``).
    """

    def __init__(
        self,
        in_channels: int = 768,
        out_channels: int = 256,
        scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
        num_outs: int = 5,
        norm_eps: float = 1e-6,
        in_index: int = -1,
        input_stride: int = 16,
    ) -> None:
        super().__init__()
        if num_outs < len(scale_factors):
            raise ValueError(f'num_outs={num_outs} is fewer than the {len(scale_factors)} scale factors')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale_factors = tuple(float(s) for s in scale_factors)
        self.num_outs = num_outs
        self.in_index = in_index
        self.strides = tuple(int(input_stride / s) for s in self.scale_factors)
        dim = in_channels
        self.stage_names: list[str] = []
        for scale, stride in zip(self.scale_factors, self.strides):
            if scale == 4.0:
                layers: list[nn.Module] = [
                    nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
                    LayerNorm2d(dim // 2, norm_eps),
                    nn.GELU(),
                    nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2),
                ]
                level_dim = dim // 4
            elif scale == 2.0:
                layers, level_dim = [nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2)], dim // 2
            elif scale == 1.0:
                layers, level_dim = [], dim
            elif scale == 0.5:
                layers, level_dim = [nn.MaxPool2d(kernel_size=2, stride=2)], dim
            else:
                raise ValueError(f'scale factor {scale} is not supported (expected 4, 2, 1 or 0.5)')
            layers += [
                ConvNorm(level_dim, out_channels, 1, eps=norm_eps),
                ConvNorm(out_channels, out_channels, 3, padding=1, eps=norm_eps),
            ]
            name = f'simfp_{int(math.log2(stride))}'
            self.add_module(name, nn.Sequential(*layers))
            self.stage_names.append(name)

    def forward(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """inputs: the (B, C, H, W) map or the backbone's tuple of maps.

        Returns:
            ``num_outs`` maps of ``out_channels``, strides ``self.strides`` then doubling.
        """
        x = inputs if isinstance(inputs, torch.Tensor) else inputs[self.in_index]
        outs = [getattr(self, name)(x) for name in self.stage_names]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))  # detectron2's LastLevelMaxPool
        return tuple(outs)
