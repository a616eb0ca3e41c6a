"""Register the project's modules into the mmengine, mmseg and mmdet registries."""

from __future__ import annotations

from mmengine.registry import MODELS as ENGINE_MODELS

from ..models.vit import VisionTransformer
from . import coco, detection, hooks, pretrain, probe, segmentation  # noqa: F401  (register on import)
from .optim import ViTLayerDecayOptimizerConstructor  # noqa: F401  (registered on import)

BACKBONE_NAME = 'MAEDenseViT'


def register_all() -> None:
    """Idempotent: registering twice replaces the entries with the same classes."""
    from mmdet.registry import MODELS as DET_MODELS
    from mmseg.registry import MODELS as SEG_MODELS

    for registry in (ENGINE_MODELS, SEG_MODELS, DET_MODELS):
        registry.register_module(name=BACKBONE_NAME, module=VisionTransformer, force=True)
