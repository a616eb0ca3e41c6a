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
    """What makes a backbone a probe's: always in eval mode, no gradient; the maps of its ``out_indices``
    (final-normed unless ``norm_features`` is False), each followed by its cls token broadcast over the grid
    when ``read_cls``, concatenated along channels."""

    embed_dim: int
    out_indices: tuple[int, ...]
    norm_features: bool = True
    read_cls: bool = False

    @property
    def feature_channels(self) -> int:
        return self.embed_dim * len(self.out_indices) * (2 if self.read_cls else 1)

    def train(self, mode: bool = True):
        """Always eval mode (the runner calls ``model.train()`` on the whole segmentor)."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            maps = self._read_layers(x)
        return torch.cat(maps, dim=1)  # (B, L*C, h, w), or (B, L*2C, h, w) with the cls tokens

    def _read_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError


def _check_read(name: str, layers: Sequence[int], kwargs: dict, has_cls: bool, cls_token: bool) -> None:
    if 'out_indices' in kwargs or kwargs.get('final_norm') is False or 'norm' in kwargs:
        raise ValueError(f'{name}: pass layers={list(layers)} and norm=, not out_indices/final_norm')
    if cls_token and not has_cls:
        raise ValueError(f'{name}: cls_token=True needs a backbone with a cls token')


class FrozenViT(_Frozen, VisionTransformer):
    """A :class:`VisionTransformer` that never changes: no gradient, always in eval mode.

    ``forward`` returns the maps of ``layers`` (block indices, negative from the end), each through the
    final norm, concatenated along channels: (B, len(layers) * C, H/p, W/p). With ``cls_token`` each
    layer's map is followed by that layer's cls token broadcast over the grid: (B, len(layers) * 2C, h, w)
    (DINOv2's depth heads read ``get_intermediate_layers(..., return_class_token=True)``).

    Args:
        layers: blocks whose patch tokens are read (``(-1,)``: the last; ``(-4, -3, -2, -1)``: the last four).
        norm: apply the final norm to every map read (DINOv2's segmentation probes: True; its depth
            probes, ``hub/depthers.py``: ``norm=False``).
        cls_token: also read each layer's cls token (see above).
        init_seed: seed of the random initialisation (used as is when ``pretrained`` is ``None``). The
            initialisation runs on the CPU generator and leaves the global random state untouched, so the
            same seed gives the same random backbone on any device and in any process.
        **kwargs: :class:`VisionTransformer` arguments (``mode`` defaults to ``'mae'``: the pretrained
            encoder as it is, with its final norm).
    """

    def __init__(
        self,
        layers: Sequence[int] = (-1,),
        init_seed: int = 0,
        norm: bool = True,
        cls_token: bool = False,
        **kwargs,
    ) -> None:
        _check_read('FrozenViT', layers, kwargs, True, False)
        super().__init__(out_indices=list(layers), final_norm=True, **kwargs)
        _check_read('FrozenViT', layers, {}, bool(self.num_prefix), cls_token)
        self.layers = tuple(layers)
        self.init_seed = init_seed
        self.norm_features = norm
        self.read_cls = cls_token
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

    def _read_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each read layer's patch map (and its cls token broadcast over the grid), normed or not."""
        if self.norm_features and not self.read_cls:
            return list(self.forward_intermediates(x, norm_all=True))
        x, hw = self.embed(x)
        maps = []
        for i, blk in enumerate(self.blocks):
            x = self._run_block(blk, x, hw)
            if i in self.out_indices:
                tokens = self.norm(x) if self.norm_features else x  # (B, 1 + N, C)
                patches = self._to_map(tokens, hw)  # (B, C, h, w)
                maps.append(patches)
                if self.read_cls:
                    maps.append(tokens[:, 0, :, None, None].expand_as(patches))
        return maps


class FrozenTimmViT(_Frozen, TimmViT):
    """A :class:`~mae_dense.models.timm_backbone.TimmViT` as the probe's frozen backbone: the same reading
    as :class:`FrozenViT` (the patch tokens of ``layers``, after the model's final norm unless ``norm=False``,
    with each layer's cls token when ``cls_token``), through timm's ``forward_intermediates``.

    Args:
        model_name, timm_kwargs, stride, pretrained, init_cfg: as :class:`TimmViT`.
        layers: blocks whose patch tokens are read (negative from the end).
        norm, cls_token: as :class:`FrozenViT`.
        init_seed: the random backbone's seed (built under it, the global random state untouched).
    """

    def __init__(
        self,
        model_name: str,
        layers: Sequence[int] = (-1,),
        init_seed: int = 0,
        norm: bool = True,
        cls_token: bool = False,
        **kwargs,
    ) -> None:
        _check_read('FrozenTimmViT', layers, kwargs, True, False)
        super().__init__(model_name, out_indices=list(layers), norm=norm, init_seed=init_seed, **kwargs)
        has_cls = getattr(self.model, 'cls_token', None) is not None
        _check_read(f'FrozenTimmViT {model_name}', layers, {}, has_cls, cls_token)
        self.layers = tuple(layers)
        self.init_seed = init_seed
        self.norm_features = bool(norm)
        self.read_cls = cls_token
        self.requires_grad_(False)
        super().train(False)

    def init_weights(self) -> None:
        super().init_weights()
        self.requires_grad_(False)

    def _read_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.model.forward_intermediates(
            self.fit_patch(x),
            indices=list(self.out_indices),
            norm=self.norm_features,
            output_fmt='NCHW',
            intermediates_only=True,
            return_prefix_tokens=self.read_cls,
        )
        if not self.read_cls:
            return list(out)
        maps = []
        for patches, prefix in out:  # prefix: (B, cls + registers, C); the cls token comes first
            maps += [patches, prefix[:, 0, :, None, None].expand_as(patches)]
        return maps


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
