"""GPU-hours of a pipeline, estimated offline: FLOPs per step x steps at a stated MFU.

The FLOPs are the backbone's, counted analytically for the architecture each cell really runs (its width,
depth, patch, input size, windows; a timm model's dimensions from timm itself, built on the meta device),
in fvcore's convention (one multiply-add = one FLOP, as :mod:`mae_dense.cli.flops` reports) and doubled to
hardware FLOPs. A test checks the count against fvcore on the project ViT. Necks, heads, the RPN and data
loading are not counted, so the hours are a lower bound of the compute and an estimate, never a
measurement: the dry run says so on every line that shows one.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any

from ..errors import PipelineError
from ..models.vit import mode_preset

__all__ = ['MFU', 'PEAK_FLOPS', 'BackboneShape', 'backbone_macs', 'gpu_hours', 'timm_shape']

PEAK_FLOPS = 989e12  # H100 SXM, dense bf16 (the spec sheet's number without sparsity), FLOP/s
MFU = 0.40  # the model-FLOPs utilisation assumed
ASSUMPTION = (
    'H100 SXM at 989 TFLOP/s dense bf16 and 40% MFU; backbone FLOPs only (necks and heads not counted)'
)
TRAIN_FACTOR = 3  # forward + backward (about twice the forward)


@dataclass(frozen=True)
class BackboneShape:
    """What the FLOPs of a plain ViT depend on."""

    embed_dim: int
    depth: int
    patch_size: int
    mlp_ratio: float = 4.0
    cls_token: bool = True
    window: int = 0  # > 0: windowed attention outside ``global_blocks``
    global_blocks: tuple[int, ...] = ()


def backbone_macs(shape: BackboneShape, height: int, width: int, keep: float = 1.0) -> int:
    """Multiply-adds of one image's forward (fvcore's FLOPs): patch embedding, the blocks' linear layers
    and attention (q k^T and attn v: 2 N K C, K keys per query: all tokens, or a window's).

    Args:
        keep: the fraction of patches the encoder sees (MAE pretraining: 1 - mask ratio).
    """
    c, p = shape.embed_dim, shape.patch_size
    gh, gw = math.ceil(height / p), math.ceil(width / p)  # a partial patch is padded
    patches = gh * gw
    tokens = int(patches * keep) + (1 if shape.cls_token else 0)
    macs = patches * 3 * p * p * c  # the patch embedding convolution
    per_block_linear = int((4 + 2 * shape.mlp_ratio) * tokens * c * c)  # qkv, proj, fc1, fc2
    for i in range(shape.depth):
        if shape.window and i not in shape.global_blocks:
            keys = shape.window * shape.window
            padded = math.ceil(gh / shape.window) * math.ceil(gw / shape.window) * keys
            macs += per_block_linear + 2 * padded * keys * c
        else:
            macs += per_block_linear + 2 * tokens * tokens * c
    return macs


def project_shape(backbone_cfg: dict[str, Any]) -> BackboneShape:
    """The shape of the project ViT a task config builds (its mode's preset, with the config's overrides)."""
    overrides = {
        k: backbone_cfg[k] for k in ('window_size', 'global_blocks') if backbone_cfg.get(k) is not None
    }
    preset = mode_preset(backbone_cfg.get('mode', 'mae'), **overrides)
    depth = int(backbone_cfg['depth'])
    gb = preset.global_blocks(depth) if callable(preset.global_blocks) else preset.global_blocks
    return BackboneShape(
        embed_dim=int(backbone_cfg['embed_dim']),
        depth=depth,
        patch_size=int(backbone_cfg.get('patch_size', 16)),
        mlp_ratio=float(backbone_cfg.get('mlp_ratio', 4.0)),
        cls_token=preset.cls_token,
        window=preset.window_size,
        global_blocks=tuple(i % depth for i in (gb or ())),
    )


def timm_shape(name: str, kwargs: dict[str, Any] | None = None) -> BackboneShape:
    """A timm model's shape, read from the model timm builds on the meta device (no weights, no memory);
    a name timm does not know is one line with the closest names."""
    import timm
    import torch

    if name not in timm.list_models():
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        raise PipelineError(
            f'timm model {name!r} unknown' + (f'; closest: {", ".join(close)}' if close else '')
        )
    with torch.device('meta'):
        model = timm.create_model(name, pretrained=False, **(kwargs or {}))
    patch = model.patch_embed.patch_size
    blocks = model.blocks
    mlp = blocks[0].mlp
    hidden = getattr(mlp, 'fc1', None) or getattr(mlp, 'fc1_g', None)
    ratio = hidden.out_features / model.embed_dim if hidden is not None else 4.0
    return BackboneShape(
        embed_dim=model.embed_dim,
        depth=len(blocks),
        patch_size=patch[0] if isinstance(patch, tuple) else int(patch),
        mlp_ratio=ratio,
        cls_token=getattr(model, 'cls_token', None) is not None,
    )


def gpu_hours(macs_per_image: float, images: float, train: bool) -> float:
    """Hours of one GPU at :data:`MFU` of :data:`PEAK_FLOPS` for ``images`` forward (and backward) passes."""
    flops = 2 * macs_per_image * images * (TRAIN_FACTOR if train else 1)
    return flops / (MFU * PEAK_FLOPS) / 3600
