"""The only place that imports mmengine/mmseg/mmdet: registers the project into their registries.

Every config imports the core, ``custom_imports=dict(imports=['mae_dense.openmmlab'], ...)``, which
registers new names only, and never replaces one of mmengine's, mmseg's or mmdet's:

* the Runner whose loaders fit a small machine (``MAEDenseRunner``, :mod:`.runner`); building it installs
  the project's checkpoint-loading policy into mmengine (``load_checkpoint``, ``_load_checkpoint``,
  ``Runner.resume``/``load_from``) and atomic writes, and applies the CPU fallbacks to its config;
* the checkpoint hook whose saves survive a kill and whose resume skips a broken newest checkpoint
  (``CrashSafeCheckpointHook``, :mod:`.checkpointing`), the loops that resume exactly (:mod:`.loops`);
* ``AmpOptimWrapper`` and ``SyncBN`` fallbacks for a machine without CUDA, under their own names
  (:mod:`.fallbacks`);
* the ViT backbone (mmengine), the layer-decay optimizer constructor, the pretraining model, loop and
  hooks (mmengine only: a pretraining run loads neither mmseg nor mmdet).

A config opts into the run-wide changes by naming them: ``runner_type='MAEDenseRunner'`` and
``default_hooks.checkpoint.type='CrashSafeCheckpointHook'``, as the shipped configs do. Importing this
package changes nothing else in the process.

A task adds its own module: ``mae_dense.openmmlab.segmentation`` (mmseg: the segmentor, the checked ADE20K
dataset) or ``mae_dense.openmmlab.detection`` (mmdet: the neck, LN2d, the checked COCO dataset, the COCO
metric that scores a test set without detections).
"""

from mmengine.registry import MODELS as ENGINE_MODELS

from ..models.vit import VisionTransformer
from . import checkpointing, fallbacks, hooks, loops, optim, pretrain, runner  # noqa: F401  (registers)

# mmseg's and mmdet's MODELS are children of mmengine's and find the name through it
ENGINE_MODELS.register_module(name='MAEDenseViT', module=VisionTransformer, force=True)
