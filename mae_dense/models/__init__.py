"""Models (plain PyTorch)."""

from .archs import ARCHS, Arch, get_arch, mae_config
from .mae import (
    MaskedAutoencoder,
    build_mae,
    mae_vit_base_patch16,
    mae_vit_huge_patch14,
    mae_vit_large_patch16,
)
from .necks import LayerNorm2d, SimpleFPN
from .vit import MODES, VisionTransformer

__all__ = [
    'ARCHS',
    'Arch',
    'MODES',
    'get_arch',
    'mae_config',
    'LayerNorm2d',
    'SimpleFPN',
    'MaskedAutoencoder',
    'VisionTransformer',
    'build_mae',
    'mae_vit_base_patch16',
    'mae_vit_huge_patch14',
    'mae_vit_large_patch16',
]
