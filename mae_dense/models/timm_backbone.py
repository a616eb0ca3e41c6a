"""Any ViT-family backbone that timm builds (DINOv2/v3, CLIP, SigLIP, EVA-02, DeiT3, PE, AIMv2, ...) as a
dense backbone: NCHW maps of chosen blocks at any input size, from ``forward_intermediates``.

The architecture is timm's (``timm.create_model(name, pretrained=False, dynamic_img_size=True, ...)``):
absolute position tables are resized to the input's grid at run time, RoPE models compute theirs for it.
Weights come from a release file through timm's own checkpoint filter
(:func:`mae_dense.checkpoint.timm_load.load_timm_checkpoint`).

What the MAE transfer protocol adds to the project's own ViT (a zero-initialised relative position bias,
ViTDet windows with global blocks) is not added here: a timm ViT has no window attention, so every block
attends globally; :attr:`TimmViT.transfer_additions` says so for the protocol card.

Patch sizes other than the heads' stride (patch 14 at 512 or 1024 crops): the input is RESIZED (bilinear)
to ``ceil(H / stride) * patch`` by ``ceil(W / stride) * patch`` pixels, so the token grid and the output
stride are a patch-16 ViT's (32 x 32 maps at 512, 64 x 64 at 1024): the necks' scales (4, 2, 1, 1/2), the
detector's anchor strides and the probe's label grid stay as the configs state them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .archs import Arch

__all__ = ['TimmViT', 'timm_arch']

# What every dense task asks of a timm model: no classifier, position tables at any input size. The final
# norm stays as timm builds the model (a model pooled by average keeps its ``fc_norm`` and no ``norm``).
_DENSE_DEFAULTS = dict(num_classes=0, dynamic_img_size=True)


def _create(model_name: str, timm_kwargs: dict[str, Any]) -> nn.Module:
    """``timm.create_model`` with the dense defaults under ``timm_kwargs``; one line for a bad name/option."""
    import timm

    from ..checkpoint.timm_load import check_timm_name
    from ..errors import ConfigError

    check_timm_name(model_name)
    kwargs = {**_DENSE_DEFAULTS, **timm_kwargs}
    try:
        model = timm.create_model(model_name, pretrained=False, **kwargs)
    except TypeError as exc:
        msg = str(exc).splitlines()[0]
        why = (
            ' (the dense tasks need it: they run at other input sizes than pretraining)'
            if 'dynamic_img_size' in msg
            else f'; timm_kwargs were {dict(timm_kwargs)}'
        )
        raise ConfigError(f'timm {model_name}: {msg}{why}') from None
    if getattr(model, 'attn_pool', None) is not None:  # a MAP pooling head (SigLIP): unused by dense tasks
        model.reset_classifier(0, global_pool='')
    return model


def _numbers(model: nn.Module) -> tuple[int, int, int, int]:
    """(patch, width, depth, heads) of a built timm ViT."""
    patch = model.patch_embed.patch_size
    patch = patch[0] if isinstance(patch, (tuple, list)) else int(patch)
    heads = getattr(model.blocks[0].attn, 'num_heads', 0)
    return int(patch), int(model.embed_dim), len(model.blocks), int(heads)


def timm_arch(model_name: str, timm_kwargs: dict[str, Any] | None = None) -> Arch:
    """The size of ``model_name`` with ``timm_kwargs`` (width, depth, heads, patch: what a task config needs),
    read from the model built on the meta device (no memory, no init: the suite reads it before any run)."""
    with torch.device('meta'):
        model = _create(model_name, dict(timm_kwargs or {}))
    patch, width, depth, heads = _numbers(model)
    return Arch(model_name, f'{model_name} ({width}d-{depth}b)', patch, width, depth, heads)


class TimmViT(nn.Module):
    """A timm ViT as the backbone of UperNet (four maps), Mask R-CNN (the last map) or a probe.

    Args:
        model_name: timm's name (``vit_base_patch14_reg4_dinov2``, ``eva02_base_patch14_224``, ...).
        timm_kwargs: more ``timm.create_model`` arguments (sizes timm does not name: ``embed_dim``, ``depth``,
            ``num_heads``, ``img_size``; ``drop_path_rate``, ...).
        out_indices: blocks whose maps are returned (negative: from the end).
        norm: apply the model's final norm to every returned map (the frozen-feature protocols); UperNet
            and ViTDet read the blocks' outputs as they are.
        stride: the output stride the heads expect; another patch size resizes the input (module docstring).
        drop_path_rate: stochastic depth of the task's recipe (``timm_kwargs`` may set its own).
        pretrained: a release file or URL, loaded strictly by :meth:`init_weights`; None: timm's random init.
        init_cfg: the OpenMMLab spelling of the same: ``dict(type='Pretrained', checkpoint=...)``.
        init_seed: build (and so initialise) under this seed without touching the global random state
            (the frozen probe's random backbone); None: the global state, as any model.
    """

    # a fine-tuned model with this backbone is saved and loaded under timm's own names (checkpoint.load_model)
    saves_own_names = True

    def __init__(
        self,
        model_name: str,
        timm_kwargs: dict[str, Any] | None = None,
        out_indices: Sequence[int] = (-1,),
        norm: bool = False,
        stride: int = 16,
        drop_path_rate: float | None = None,
        pretrained: str | None = None,
        init_cfg: dict | None = None,
        init_seed: int | None = None,
    ) -> None:
        super().__init__()
        kwargs = dict(timm_kwargs or {})
        if drop_path_rate is not None:
            kwargs.setdefault('drop_path_rate', drop_path_rate)
        if init_cfg is not None:
            if init_cfg.get('type') != 'Pretrained' or 'checkpoint' not in init_cfg or pretrained:
                raise ValueError(
                    f"init_cfg={init_cfg}: expected dict(type='Pretrained', checkpoint=PATH) and no pretrained"
                )
            pretrained = init_cfg['checkpoint']
        with torch.random.fork_rng(devices=[], enabled=init_seed is not None):
            if init_seed is not None:
                torch.manual_seed(init_seed)
            self.model = _create(model_name, kwargs)
        self.model_name = model_name
        self.timm_kwargs = kwargs
        self.pretrained = pretrained
        self.timm_patch_size, self.embed_dim, self.depth, self.num_heads = _numbers(self.model)
        if any(not -self.depth <= i < self.depth for i in out_indices):
            raise ValueError(f'out_indices={list(out_indices)} do not fit {model_name} ({self.depth} blocks)')
        self.out_indices = tuple(i % self.depth for i in out_indices)
        self.norm = bool(norm)
        self._freeze_unused()
        self.stride = int(stride)
        self.patch_size = self.stride  # the output stride: what the heads and the probe's cache read

    def _freeze_unused(self) -> None:
        """Parameters the returned maps never pass through (the pooled features' ``fc_norm``, the final
        ``norm`` when maps are read without it) do not train: DDP would find them unused, and the layer
        decay gives no group to what does not train. They still load from the file."""
        unused = ['fc_norm', 'head'] + ([] if self.norm else ['norm'])
        for name in unused:
            module = getattr(self.model, name, None)
            if isinstance(module, nn.Module):
                module.requires_grad_(False)

    @property
    def transfer_additions(self) -> dict[str, str]:
        """What the transfer adds to the pretrained architecture, for the protocol card."""
        p = self.timm_patch_size
        fit = (
            'none'
            if p == self.stride
            else f'input resized by {p}/{self.stride} (bilinear) so patch {p} gives a stride-{self.stride} grid'
        )
        return dict(
            source=f'timm {self.model_name}',
            rel_pos='none (timm architecture as pretrained)',
            windows='none: global attention in every block (a timm ViT has no window attention)',
            patch_fit=fit,
        )

    def init_weights(self) -> None:
        """Load ``pretrained`` through timm's filter (strict, reported); without one, keep timm's init."""
        if self.pretrained:
            from ..checkpoint.timm_load import load_timm_checkpoint

            load_timm_checkpoint(self.model, self.model_name, self.pretrained)

    def fit_patch(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the input the patch embedding sees (resized when patch != stride)."""
        if self.timm_patch_size == self.stride:
            return x
        h, w = (math.ceil(s / self.stride) * self.timm_patch_size for s in x.shape[2:])
        return F.interpolate(x, size=(h, w), mode='bilinear', align_corners=False)

    def forward_intermediates(
        self, x: torch.Tensor, norm_all: bool | None = None
    ) -> tuple[torch.Tensor, ...]:
        """NCHW maps (B, C, H/stride, W/stride) after the blocks of ``out_indices`` (timm's own
        ``forward_intermediates``; ``norm_all``: the final norm on each, default ``norm``)."""
        maps = self.model.forward_intermediates(
            self.fit_patch(x),
            indices=list(self.out_indices),
            norm=self.norm if norm_all is None else norm_all,
            output_fmt='NCHW',
            intermediates_only=True,
        )
        return tuple(maps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.forward_intermediates(x)
