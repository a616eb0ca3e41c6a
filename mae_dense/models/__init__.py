"""Models (plain PyTorch)."""

from .vit import VisionTransformer, vit_config

__all__ = ['VisionTransformer', 'vit_config']
