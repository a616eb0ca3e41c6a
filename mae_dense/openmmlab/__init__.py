"""The only place that imports mmengine/mmseg/mmdet: registers the project into their registries.

``custom_imports=dict(imports=['mae_dense.openmmlab'], allow_failed_imports=False)`` in any config:

* installs the project's checkpoint-loading policy into mmengine (``load_checkpoint``,
  ``_load_checkpoint``, ``Runner.resume``/``load_from``);
* makes checkpoint writes atomic and crash-safe, and resume skip a broken newest checkpoint
  (:mod:`.checkpointing`); registers the loops that resume exactly (:mod:`.loops`) and the Runner whose
  loaders fit a small machine (:mod:`.runner`);
* makes ``AmpOptimWrapper`` and ``SyncBN`` fall back cleanly on a machine without CUDA;
* registers the ViT backbone, the layer-decay optimizer constructor and the other modules into the
  mmengine, mmseg and mmdet registries.
"""

from . import loops, runner  # noqa: F401  (register on import)
from .checkpointing import install_atomic_checkpoints
from .datasets import register_datasets
from .fallbacks import install_cpu_fallbacks
from .loading import install_loading_policy
from .registry import register_all

install_loading_policy()
install_atomic_checkpoints()
install_cpu_fallbacks()
register_all()
register_datasets()

__all__ = [
    'install_atomic_checkpoints',
    'install_cpu_fallbacks',
    'install_loading_policy',
    'register_all',
    'register_datasets',
]
