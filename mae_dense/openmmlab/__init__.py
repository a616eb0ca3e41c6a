"""The only place that imports mmengine/mmseg/mmdet: registers the project into their registries.

Every config imports the core, ``custom_imports=dict(imports=['mae_dense.openmmlab'], ...)``, which

* installs the project's checkpoint-loading policy into mmengine (``load_checkpoint``,
  ``_load_checkpoint``, ``Runner.resume``/``load_from``);
* makes checkpoint writes atomic and crash-safe, and resume skip a broken newest checkpoint
  (:mod:`.checkpointing`); registers the loops that resume exactly (:mod:`.loops`) and the Runner whose
  loaders fit a small machine (:mod:`.runner`);
* makes ``AmpOptimWrapper`` and ``SyncBN`` fall back cleanly on a machine without CUDA;
* registers the ViT backbone (mmengine), the layer-decay optimizer constructor, the pretraining model,
  loop and hooks (mmengine only: a pretraining run loads neither mmseg nor mmdet).

A task adds its own module: ``mae_dense.openmmlab.segmentation`` (mmseg: the segmentor, the checked ADE20K
dataset) or ``mae_dense.openmmlab.detection`` (mmdet: the neck, LN2d, the checked COCO dataset).
"""

from mmengine.registry import MODELS as ENGINE_MODELS

from ..models.vit import VisionTransformer
from . import hooks, loops, optim, pretrain, runner  # noqa: F401  (register on import)
from .checkpointing import install_atomic_checkpoints
from .fallbacks import install_cpu_fallbacks
from .loading import install_loading_policy

install_loading_policy()
install_atomic_checkpoints()
install_cpu_fallbacks()
# mmseg's and mmdet's MODELS are children of mmengine's and find the name through it
ENGINE_MODELS.register_module(name='MAEDenseViT', module=VisionTransformer, force=True)

__all__ = [
    'install_atomic_checkpoints',
    'install_cpu_fallbacks',
    'install_loading_policy',
]
