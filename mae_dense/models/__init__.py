"""Models (plain PyTorch)."""

from .mae import (
    MaskedAutoencoder,
    build_mae,
    mae_vit_base_patch16,
    mae_vit_huge_patch14,
    mae_vit_large_patch16,
)
from .necks import LayerNorm2d, SimpleFPN
from .vit import VisionTransformer, vit_config

__all__ = [
    'LayerNorm2d',
    'SimpleFPN',
    'MaskedAutoencoder',
    'VisionTransformer',
    'build_mae',
    'mae_vit_base_patch16',
    'mae_vit_huge_patch14',
    'mae_vit_large_patch16',
    'vit_config',
]
