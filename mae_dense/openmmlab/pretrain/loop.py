"""MAE pretraining's loop: the exact-resume epoch loop, telling the optimizer constructor the real batch."""

from __future__ import annotations

from typing import Any

from mmengine.registry import LOOPS

from ..engine.loops import ExactResumeEpochBasedTrainLoop

__all__ = ['MAEPretrainLoop']


@LOOPS.register_module(force=True)
class MAEPretrainLoop(ExactResumeEpochBasedTrainLoop):
    """The exact-resume epoch loop that gives ``MAEPretrainOptimWrapperConstructor`` the real batch size.

    The Runner builds the loop (and its loader) just before the optimizer, so the constructor sees the
    per-process batch actually used, including any ``--cfg-options train_dataloader.batch_size=...``.
    """

    def __init__(self, runner, dataloader, max_epochs: int, **kwargs: Any) -> None:
        super().__init__(runner, dataloader, max_epochs, **kwargs)
        cfg = runner.optim_wrapper
        if isinstance(cfg, dict) and cfg.get('constructor') == 'MAEPretrainOptimWrapperConstructor':
            loader = self.dataloader
            batch_size = loader.batch_size or getattr(loader.batch_sampler, 'batch_size', None)
            paramwise = dict(cfg.get('paramwise_cfg') or {})
            paramwise['batch_size'] = batch_size
            cfg['paramwise_cfg'] = paramwise
