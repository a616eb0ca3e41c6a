"""MAE pretraining through mmengine's Runner (mmengine only: a pretraining run loads neither mmseg nor mmdet).

Importing it (``custom_imports=dict(imports=['mae_dense.openmmlab', 'mae_dense.openmmlab.pretrain'])``, as
the pretraining configs do) registers:

* ``MAEPretrainer``, ``MAEDataPreprocessor`` (MODELS) and ``MAEImageFolder`` (DATASETS): :mod:`.model`;
* ``MAEPretrainLoop`` (LOOPS): :mod:`.loop`;
* ``MAEPretrainHook`` (HOOKS): :mod:`.hooks`;
* ``MAEPretrainOptimWrapperConstructor`` and ``SkipNonFiniteAmpOptimWrapper``: :mod:`.optim`.
"""

from .hooks import MAEPretrainHook
from .loop import MAEPretrainLoop
from .model import MAEDataPreprocessor, MAEImageFolder, MAEPretrainer
from .optim import MAEPretrainOptimWrapperConstructor, SkipNonFiniteAmpOptimWrapper

__all__ = [
    'MAEDataPreprocessor',
    'MAEImageFolder',
    'MAEPretrainHook',
    'MAEPretrainLoop',
    'MAEPretrainOptimWrapperConstructor',
    'MAEPretrainer',
    'SkipNonFiniteAmpOptimWrapper',
]
