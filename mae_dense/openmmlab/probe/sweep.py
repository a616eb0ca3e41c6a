"""The learning-rate sweep: one parameter group per head, and the IoU of every head with the best one
reported (registered on import)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS
from torch import nn

from ...errors import ConfigError
from ..engine.runner import unwrap_model
from .model import LinearProbeDecodeHead


@OPTIM_WRAPPER_CONSTRUCTORS.register_module(force=True)
class LinearProbeOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """One parameter group per probe head at that head's learning rate (``model.decode_head.lrs``).

    Nothing else is optimised: a trainable parameter outside the heads is a configuration error, and the
    frozen backbone's parameters are never handed to the optimiser.
    """

    def __call__(self, model: nn.Module):
        model = unwrap_model(model)
        head = getattr(model, 'decode_head', None)
        if not isinstance(head, LinearProbeDecodeHead):
            raise ConfigError('LinearProbeOptimWrapperConstructor: the model has no LinearProbeDecodeHead')
        if 'lr' in self.optimizer_cfg:
            raise ConfigError(
                f"optim_wrapper.optimizer.lr={self.optimizer_cfg['lr']}: the probe's learning rates are "
                f'model.decode_head.lrs={list(head.lrs)}'
            )
        groups = [dict(params=list(h.parameters()), lr=lr) for lr, h in zip(head.lrs, head.probe.heads)]
        grouped = {id(p) for g in groups for p in g['params']}
        stray = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in grouped]
        if stray:
            raise ConfigError(f'trainable parameters outside the probe heads: {", ".join(stray[:4])}')
        optimizer = OPTIMIZERS.build(dict(self.optimizer_cfg, params=groups))
        wrapper_cfg = dict(self.optim_wrapper_cfg)
        wrapper_cfg.setdefault('type', 'OptimWrapper')
        return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))


@METRICS.register_module(force=True)
class ProbeSweepIoUMetric(IoUMetric):
    """mmseg's IoU for every head of a sweep; the best head's ``aAcc``/``mIoU``/``mAcc`` are reported.

    Also reported: ``lr`` (the best head's learning rate) and ``mIoU@lr=<lr>`` for every head. Picking
    the best head on the evaluation set itself is how DINOv2's linear evaluations report a sweep
    (``dinov2/eval/linear.py``); it is optimistic by the selection.
    """

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        num_classes = len(self.dataset_meta['classes'])
        for sample in data_samples:
            preds = sample['probe_pred_sem_seg']['data']  # (K, H, W)
            label = sample['gt_sem_seg']['data'].squeeze().to(preds)
            areas = [self.intersect_and_union(p, label, num_classes, self.ignore_index) for p in preds]
            self.results.append((tuple(sample['probe_lrs']), areas))

    def compute_metrics(self, results: list) -> dict[str, float]:
        lrs = results[0][0]
        sweep = []
        for k in range(len(lrs)):
            totals = [sum(r[1][k][j] for r in results) for j in range(4)]
            iou = self.total_area_to_metrics(*totals, ['mIoU'], self.nan_to_num, self.beta)['IoU']
            sweep.append(float(np.round(np.nanmean(iou) * 100, 2)))
        best = int(np.argmax(sweep))
        metrics = super().compute_metrics([r[1][best] for r in results])  # logs the per-class table
        metrics = {k: float(v) for k, v in metrics.items()}
        metrics['lr'] = lrs[best]
        metrics.update({f'mIoU@lr={lr:g}': v for lr, v in zip(lrs, sweep)})
        return metrics
