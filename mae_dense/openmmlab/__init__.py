"""The only place that imports mmengine/mmseg/mmdet: registers the project into their registries.

Every config imports the core, ``custom_imports=dict(imports=['mae_dense.openmmlab'], ...)``, which
registers new names only, and never replaces one of mmengine's, mmseg's or mmdet's:

* the engine part (:mod:`.engine`): the Runner whose loaders fit a small machine (``MAEDenseRunner``; its
  build installs the checkpoint-loading policy and atomic writes into mmengine and applies the CPU
  fallbacks), the crash-safe checkpoint hook, the loops and hook that resume exactly, the CPU fallbacks
  under their own names, the test progress bar;
* the ViT backbone (``MAEDenseViT``, mmengine's MODELS, which mmseg's and mmdet's find through theirs), the
  timm backbone (``MAEDenseTimmViT``: any ViT family timm builds, by its timm name) and
  the layer-decay optimizer constructor (:mod:`.layer_decay`).

A config opts into the run-wide changes by naming them: ``runner_type='MAEDenseRunner'`` and
``default_hooks.checkpoint.type='CrashSafeCheckpointHook'``, as the shipped configs do. Importing this
package changes nothing else in the process.

A task adds its own module, one per task: ``mae_dense.openmmlab.segmentation`` (mmseg: the segmentor, the
checked ADE20K dataset), ``mae_dense.openmmlab.detection`` (mmdet: the neck, LN2d, the checked COCO
dataset, the COCO metric that scores a test set without detections), ``mae_dense.openmmlab.probe`` (the
frozen-backbone linear probe) and ``mae_dense.openmmlab.pretrain`` (MAE pretraining: mmengine only).
"""

from mmengine.registry import MODELS as ENGINE_MODELS

from ..models.timm_backbone import TimmViT
from ..models.vit import VisionTransformer
from . import engine, layer_decay  # noqa: F401  (register on import)

# mmseg's and mmdet's MODELS are children of mmengine's and find the name through it
ENGINE_MODELS.register_module(name='MAEDenseViT', module=VisionTransformer, force=True)
# any ViT-family backbone timm builds, by its timm name (mae_dense.models.timm_backbone)
ENGINE_MODELS.register_module(name='MAEDenseTimmViT', module=TimmViT, force=True)
