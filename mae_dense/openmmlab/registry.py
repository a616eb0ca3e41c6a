"""The project's ViT under one name in the OpenMMLab registries that build backbones."""

from __future__ import annotations

from mmengine.registry import Registry

from ..models.vit import VisionTransformer

BACKBONE_NAME = 'MAEDenseViT'


def register_backbone(*registries: Registry) -> None:
    """Register :class:`VisionTransformer` as ``MAEDenseViT`` in each registry; idempotent."""
    for registry in registries:
        registry.register_module(name=BACKBONE_NAME, module=VisionTransformer, force=True)
