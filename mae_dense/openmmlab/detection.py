"""ViTDet-style Mask R-CNN pieces for mmdet 3.x: the simple feature pyramid, a channel LayerNorm, fp16 DDP.

Importing this module (``custom_imports=dict(imports=['mae_dense.openmmlab',
'mae_dense.openmmlab.detection'])``, as the COCO configs do) registers:

* ``MAEDenseSimpleFPN`` (mmdet ``MODELS``): :class:`mae_dense.models.necks.SimpleFPN`;
* ``LN2d`` (mmengine ``MODELS``, found from mmdet's): detectron2's channel LayerNorm, usable as
  ``norm_cfg=dict(type='LN2d', eps=1e-6)`` in mmdet's conv heads (mmcv's ``build_norm_layer``);
* ``Fp16CompressionHook`` (mmengine ``HOOKS``): DDP gradients all-reduced in fp16, as detectron2's
  ``train.ddp.fp16_compression=True``;
* ``CocoMetricScoringNoDetections`` (mmdet ``METRICS``): mmdet's ``CocoMetric`` (same arguments), except
  that a test set without a single detection above the score threshold scores AP 0.0 with one warning line
  (mmdet logs an error and returns no metric); mmdet's own ``CocoMetric`` is left as it is;
* and, through :mod:`mae_dense.openmmlab.coco`, ``CheckedCocoDataset`` (mmdet ``DATASETS``).
"""

from __future__ import annotations

import logging

from mmdet.evaluation import CocoMetric
from mmdet.registry import METRICS
from mmdet.registry import MODELS as DET_MODELS
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.registry import MODELS as ENGINE_MODELS
from torch.nn.parallel import DistributedDataParallel

from ..models.necks import LayerNorm2d, SimpleFPN
from . import coco  # noqa: F401  (registers CheckedCocoDataset, which the COCO configs use)

__all__ = ['Fp16CompressionHook']

NECK_NAME = 'MAEDenseSimpleFPN'
NORM_NAME = 'LN2d'


@HOOKS.register_module(force=True)
class Fp16CompressionHook(Hook):
    """Compress DDP gradient all-reduce to fp16 (``default_hooks.fp16_compress_hook``) before training.

    Registers the comm hook when the runner's model is wrapped in ``DistributedDataParallel`` and lives on
    CUDA; otherwise (one process, CPU) it only logs one line saying so.

    Args:
        cuda_only: register only for a CUDA model (on CPU/gloo the compression saves nothing); ``False``
            also registers it for a CPU DDP model.
    """

    def __init__(self, cuda_only: bool = True) -> None:
        self.cuda_only = cuda_only
        self.registered = False

    def before_train(self, runner) -> None:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        model = runner.model
        on_cuda = any(p.is_cuda for p in model.parameters())
        if isinstance(model, DistributedDataParallel) and (on_cuda or not self.cuda_only):
            model.register_comm_hook(None, default_hooks.fp16_compress_hook)
            self.registered = True
            print_log('Fp16CompressionHook: DDP gradients are all-reduced in fp16', logger=runner.logger)
        else:
            where = 'DDP on CPU' if isinstance(model, DistributedDataParallel) else 'not wrapped in DDP'
            print_log(
                f'Fp16CompressionHook: model is {where}; gradient compression is off', logger=runner.logger
            )


@METRICS.register_module(force=True)
class CocoMetricScoringNoDetections(CocoMetric):
    """mmdet's ``CocoMetric``; no detection at all (e.g. all scores under ``score_thr``) scores AP 0.0."""

    _AP_ITEMS = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')
    _AR_ITEMS = ('AR@100', 'AR@300', 'AR@1000', 'AR_s@1000', 'AR_m@1000', 'AR_l@1000')

    def compute_metrics(self, results: list) -> dict[str, float]:
        if self.format_only or any(len(pred['bboxes']) for _, pred in results):
            return super().compute_metrics(results)
        print_log(
            f'no detection in any of the {len(results)} test images (every score under the score threshold, '
            'model.test_cfg.rcnn.score_thr): every AP is 0.0',
            logger='current',
            level=logging.WARNING,
        )
        zeros = {}
        for metric in self.metrics:
            if metric == 'proposal':
                zeros.update({item: 0.0 for item in self.metric_items or self._AR_ITEMS})
            elif metric != 'proposal_fast':
                zeros.update({f'{metric}_{item}': 0.0 for item in self.metric_items or self._AP_ITEMS})
        return zeros


DET_MODELS.register_module(name=NECK_NAME, module=SimpleFPN, force=True)
ENGINE_MODELS.register_module(name=NORM_NAME, module=LayerNorm2d, force=True)  # mmdet's MODELS finds it too
