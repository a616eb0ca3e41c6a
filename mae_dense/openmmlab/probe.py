"""Frozen-backbone linear probes on mmseg/mmengine: model, head, data, optimiser, metric, feature cache.

Two ways to feed the same model (:class:`LinearProbeEncoderDecoder`, a frozen ViT and one linear head per
learning rate of a sweep):

* augmented mode: images through the protocol's random augmentation, features computed on the fly;
  a plain mmengine training (``tools/train.py``/``dist_train.sh`` run it as is);
* fast mode: the features of a fixed set of crops (:class:`ProbeFixedCrops`) are computed once by
  :func:`build_feature_cache` into an fp16 cache on disk and every iteration reads them
  (:class:`ProbeFeatureDataset`); the data preprocessor hands them to the heads, skipping the backbone.

Evaluation always runs the backbone on the validation images, every head in the same pass
(:class:`ProbeSweepIoUMetric` reports the best head and its learning rate).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from mmcv.cnn import build_norm_layer
from mmengine.dist import barrier, get_dist_info
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS
from mmengine.structures import PixelData
from mmseg.evaluation.metrics import IoUMetric
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.losses import accuracy
from mmseg.registry import DATASETS, METRICS, MODELS
from mmseg.structures import SegDataSample
from torch import Tensor, nn

from ..data.feature_cache import FeatureCache, FeatureCacheWriter
from ..errors import ConfigError
from ..models.probe import FrozenViT, ProbeHeads
from .loops import rng_preserved
from .runner import unwrap_model
from .segmentation import MAEDenseEncoderDecoder

MODELS.register_module(name='MAEDenseFrozenViT', module=FrozenViT, force=True)


# ----------------------------------------------------------------------------------------------- model
@MODELS.register_module(force=True)
class LinearProbeDecodeHead(BaseModule):
    """mmseg decode-head interface over :class:`ProbeHeads` (one BN + 1x1 conv per learning rate).

    ``forward``/``predict`` give the logits of all heads stacked along channels, (B, K*num_classes, h, w),
    so mmseg's whole and sliding-window inference handle K heads as one; ``loss`` upsamples each head's
    logits to the labels (bilinear, as mmseg's heads) and applies ``loss_decode`` (mmseg's cross-entropy:
    averaged over all pixels, ignored ones included, as in mmseg 0.x which DINOv2 used).

    Args:
        in_channels: feature channels (embed_dim x number of blocks read).
        num_classes: classes (150 for ADE20K).
        lrs: learning rate of each head (the optimiser constructor reads them).
        selected: head whose prediction becomes ``pred_sem_seg`` (the sweep metric scores all heads).
        norm_cfg: the BatchNorm (``SyncBN``, as DINOv2's ``BNHead``; BatchNorm on one process/CPU).
        loss_decode: mmseg loss config.
        ignore_index: label ignored by the loss and the accuracy.
        align_corners: must stay ``False`` (DINOv2's and mmseg's ADE20K heads).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        lrs: Sequence[float] = (1e-3,),
        selected: int = 0,
        norm_cfg: dict | None = None,
        loss_decode: dict | None = None,
        ignore_index: int = 255,
        align_corners: bool = False,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        if align_corners:
            raise ConfigError('model.decode_head.align_corners=True: the linear probe upsamples with False')
        if not 0 <= selected < len(lrs):
            raise ConfigError(
                f'model.decode_head.selected={selected}: expected 0..{len(lrs) - 1} (one per lr)'
            )
        norm_cfg = dict(norm_cfg or dict(type='SyncBN', requires_grad=True))
        try:
            self.probe = ProbeHeads(
                in_channels, num_classes, lrs, norm_layer=lambda c: build_norm_layer(norm_cfg, c)[1]
            )
        except ValueError as exc:
            raise ConfigError(f'model.decode_head.{exc}') from None
        self.loss_decode = MODELS.build(
            loss_decode or dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)
        )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.out_channels = num_classes * len(lrs)
        self.selected = selected
        self.ignore_index = ignore_index
        self.align_corners = False

    @property
    def lrs(self) -> tuple[float, ...]:
        return self.probe.lrs

    def forward(self, inputs: Sequence[Tensor] | Tensor) -> Tensor:
        x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        return self.probe(x).transpose(0, 1).flatten(1, 2)  # (K, B, C, h, w) -> (B, K*C, h, w)

    def predict(self, inputs: Sequence[Tensor], batch_img_metas: list[dict], test_cfg=None) -> Tensor:
        """All heads' logits at the input size, by mmseg's own ``predict_by_feat`` (windows, padding)."""
        return BaseDecodeHead.predict_by_feat(self, self.forward(inputs), batch_img_metas)

    def loss(self, inputs: Sequence[Tensor], batch_data_samples: list, train_cfg=None) -> dict:
        x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        labels = torch.stack([s.gt_sem_seg.data for s in batch_data_samples]).squeeze(1)  # (B, H, W)
        losses = {}
        for lr, head in zip(
            self.lrs, self.probe.heads
        ):  # one head at a time: K full-res logits never coexist
            tag = '' if len(self.lrs) == 1 else f'@lr={lr:g}'
            logits = head(x, size=labels.shape[1:])  # (B, C, H, W)
            losses[self.loss_decode.loss_name + tag] = self.loss_decode(
                logits, labels, ignore_index=self.ignore_index
            )
            losses['acc_seg' + tag] = accuracy(logits, labels, ignore_index=self.ignore_index)
        return losses


@MODELS.register_module(force=True)
class LinearProbeEncoderDecoder(MAEDenseEncoderDecoder):
    """A frozen :class:`FrozenViT` + :class:`LinearProbeDecodeHead` in mmseg's segmentor interface.

    ``forward(..., precomputed=True)`` takes features instead of images (the fast mode's cached crops;
    :class:`ProbeDataPreProcessor` sets the flag). ``predict`` writes every head's prediction as
    ``probe_pred_sem_seg`` (K, H, W) and the heads' learning rates as the ``probe_lrs`` metainfo.

    Args:
        backbone_amp: run the backbone under fp16 autocast on CUDA (the heads stay fp32); on a CPU the
            backbone runs in fp32.
        **kwargs: ``EncoderDecoder`` arguments (no neck, no auxiliary head).
    """

    def __init__(self, backbone: dict, decode_head: dict, backbone_amp: bool = True, **kwargs) -> None:
        if kwargs.get('neck') or kwargs.get('auxiliary_head'):
            raise ConfigError('LinearProbeEncoderDecoder: a linear probe has no neck and no auxiliary head')
        super().__init__(backbone=backbone, decode_head=decode_head, **kwargs)
        if not isinstance(self.backbone, FrozenViT):
            raise ConfigError(f"model.backbone.type={backbone.get('type')!r}: expected 'MAEDenseFrozenViT'")
        if not isinstance(self.decode_head, LinearProbeDecodeHead):
            raise ConfigError(
                f"model.decode_head.type={decode_head.get('type')!r}: expected 'LinearProbeDecodeHead'"
            )
        if self.decode_head.in_channels != self.backbone.feature_channels:
            raise ConfigError(
                f'model.decode_head.in_channels={self.decode_head.in_channels}: the backbone gives '
                f'{self.backbone.feature_channels} ({len(self.backbone.out_indices)} blocks x '
                f'{self.backbone.embed_dim})'
            )
        if self.test_cfg and self.test_cfg.get('aug'):
            raise ConfigError('model.test_cfg.aug: the linear probe is evaluated at a single scale')
        self.backbone_amp = backbone_amp

    def backbone_features(self, inputs: Tensor) -> Tensor:
        """Frozen features (B, L*C, h, w) in fp32 (computed under fp16 autocast on CUDA)."""
        amp = self.backbone_amp and inputs.is_cuda
        with torch.autocast('cuda', dtype=torch.float16, enabled=amp):
            features = self.backbone(inputs)
        return features.float()

    def extract_feat(self, inputs: Tensor) -> list[Tensor]:
        return [self.backbone_features(inputs)]

    def forward(self, inputs: Tensor, data_samples=None, mode: str = 'tensor', precomputed: bool = False):
        if precomputed:
            if mode != 'loss':
                raise ValueError(f'precomputed features are for training (mode="loss"), got mode={mode!r}')
            return self._decode_head_forward_train([inputs], data_samples)
        return super().forward(inputs, data_samples, mode)

    def predict(self, inputs: Tensor, data_samples=None) -> list:
        if data_samples is None:
            shape = tuple(inputs.shape[2:])
            meta = dict(ori_shape=shape, img_shape=shape, pad_shape=shape, padding_size=[0, 0, 0, 0])
            data_samples = [SegDataSample(metainfo=meta) for _ in range(inputs.shape[0])]
        logits = self.inference(inputs, [s.metainfo for s in data_samples])  # (B, K*C, H, W)
        head = self.decode_head
        num_heads, c = len(head.lrs), head.num_classes
        preds: dict[int, list[Tensor]] = {}
        for k in [k for k in range(num_heads) if k != head.selected] + [head.selected]:  # selected last
            self.postprocess_result(logits[:, k * c : (k + 1) * c], data_samples)
            preds[k] = [s.pred_sem_seg.data for s in data_samples]
        for i, sample in enumerate(data_samples):
            stacked = torch.cat([preds[k][i] for k in range(num_heads)])  # (K, H, W)
            sample.set_data(dict(probe_pred_sem_seg=PixelData(data=stacked)))
            sample.set_metainfo(dict(probe_lrs=head.lrs))
        return data_samples


@MODELS.register_module(force=True)
class ProbeDataPreProcessor(SegDataPreProcessor):
    """``SegDataPreProcessor`` that also passes cached features (batches with ``features``/``labels``)."""

    def forward(self, data: dict, training: bool = False) -> dict:
        if 'features' not in data:
            return super().forward(data, training)
        data = self.cast_data(data)
        features = torch.stack(list(data['features'])).float()  # fp16 on disk -> fp32 heads
        labels = torch.stack(list(data['labels'])).long()  # (B, H, W), 255 = ignore
        samples = [SegDataSample(gt_sem_seg=PixelData(data=label[None])) for label in labels]
        return dict(inputs=features, data_samples=samples, precomputed=True)


# ------------------------------------------------------------------------------------------------ data
@contextlib.contextmanager
def _seeded_augmentation(seed: int, index: int) -> Iterator[None]:
    """numpy's and Python's global generators (the ones mmcv/mmseg transforms draw from) seeded for one
    crop, their previous states restored after."""
    np_state, py_state = np.random.get_state(), random.getstate()
    crop_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
    np.random.seed(crop_seed)
    random.seed(crop_seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


@DATASETS.register_module(force=True)
class ProbeFixedCrops(torch.utils.data.Dataset):
    """A fixed set of augmented crops: crop ``i`` is always the same draw of the pipeline's randomness.

    Crop ``i`` is view ``i // len(dataset)`` of image ``i % len(dataset)``; its transforms draw from
    generators seeded by ``(seed, i)``, whichever process or order loads it. Each item carries its index
    as the ``crop_index`` metainfo.

    Args:
        dataset: the image dataset (its pipeline makes the crops).
        views: crops per image.
        seed: seed of the crops.
        num_crops: use this many crops, evenly spaced over all of them (default: all).
    """

    def __init__(self, dataset: dict, views: int = 1, seed: int = 0, num_crops: int | None = None) -> None:
        self.dataset = DATASETS.build(dataset)
        total = len(self.dataset) * views
        if views < 1 or (num_crops is not None and not 1 <= num_crops <= total):
            raise ConfigError(
                f'ProbeFixedCrops: views={views}, num_crops={num_crops}: expected views >= 1 and '
                f'1 <= num_crops <= {total} ({len(self.dataset)} images x {views} views)'
            )
        self.seed = seed
        count = total if num_crops is None else num_crops
        self.indices = np.linspace(0, total - 1, count).round().astype(np.int64)

    @property
    def metainfo(self) -> dict:
        return self.dataset.metainfo

    def full_init(self) -> None:
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        crop = int(self.indices[i])
        with _seeded_augmentation(self.seed, crop):
            item = self.dataset[crop % len(self.dataset)]
        item['data_samples'].set_metainfo(dict(crop_index=i))
        return item


@DATASETS.register_module(force=True)
class ProbeFeatureDataset(torch.utils.data.Dataset):
    """The cached features and labels of :class:`ProbeFixedCrops` (fast mode).

    Args:
        crops: the :class:`ProbeFixedCrops` config the cache is built from (read by the tool that builds it).
        dtype: feature dtype on disk (``'float16'``).
        cache_dir: the cache itself; ``mae-dense probe --mode fast`` sets it after building the cache.
    """

    def __init__(self, crops: dict, dtype: str = 'float16', cache_dir: str | None = None) -> None:
        if cache_dir is None:
            raise ConfigError(
                'ProbeFeatureDataset.cache_dir is unset: the fast mode runs through `mae-dense probe CONFIG '
                '--mode fast`, which builds the feature cache and sets it'
            )
        self.cache = FeatureCache(cache_dir)
        self.metainfo = self.cache.meta.get('metainfo', {})

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> dict:
        features, labels = self.cache[i]
        return dict(features=torch.from_numpy(features), labels=torch.from_numpy(labels))


# ------------------------------------------------------------------------------------- feature cache
def build_feature_cache(
    model: LinearProbeEncoderDecoder,
    loader_cfg: dict,
    cache_dir: str | Path,
    dtype: str,
    meta: dict,
    seed: int | None = None,
) -> int:
    """One pass of the frozen backbone over the fixed crops, each crop's features into its cache row.

    The crops go through the model's own data preprocessor in training mode (the same normalisation and
    padding as an on-the-fly training step) and :meth:`LinearProbeEncoderDecoder.backbone_features`. With
    several processes each extracts its share of the crops (the loader's sampler splits them). Global
    random states are left as they were, so a run that builds the cache trains exactly as one that finds it.

    Returns:
        The number of crops.
    """
    from mmengine.runner import Runner

    rank, _ = get_dist_info()
    size = model.data_preprocessor.size
    if not size:
        raise ConfigError('model.data_preprocessor.size is unset: the fast mode caches fixed-size crops')
    patch = model.backbone.patch_size
    feature_shape = (model.backbone.feature_channels, size[0] // patch, size[1] // patch)
    with rng_preserved():
        loader = Runner.build_dataloader(loader_cfg, seed=seed)
        num = len(loader.dataset)
        shape = dict(num=num, feature_shape=feature_shape, label_shape=tuple(size), dtype=dtype)
        writer = FeatureCacheWriter(cache_dir, create=True, **shape) if rank == 0 else None
        barrier()
        writer = writer or FeatureCacheWriter(cache_dir, create=False, **shape)
        every = max(1, len(loader) // 10)
        for step, batch in enumerate(loader):
            data = model.data_preprocessor(batch, training=True)
            features = model.backbone_features(data['inputs'])
            labels = torch.stack([s.gt_sem_seg.data[0] for s in data['data_samples']])
            if labels.max() > 255:
                raise ConfigError(f'{cache_dir}: labels above 255 do not fit the cache (uint8)')
            writer.write(
                [s.metainfo['crop_index'] for s in data['data_samples']],
                features.to(getattr(torch, dtype)).cpu().numpy(),
                labels.to(torch.uint8).cpu().numpy(),
            )
            if (step + 1) % every == 0 or step + 1 == len(loader):
                print_log(f'feature cache: {step + 1}/{len(loader)} batches', logger='current')
        writer.flush()
        barrier()
        if rank == 0:
            writer.commit(dict(meta, metainfo=loader.dataset.metainfo))
        barrier()
    return num


# --------------------------------------------------------------------------------------- optimisation
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


# -------------------------------------------------------------------------------------------- metric
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
