"""The probe model: a frozen ViT, one linear head per learning rate, and the preprocessor that feeds
cached features to the heads (registered on import)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from mmengine.structures import PixelData
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.losses import accuracy
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import Tensor

from ...errors import ConfigError
from ...models.probe import FROZEN_BACKBONES, FrozenTimmViT, FrozenViT, ProbeHeads
from ..frozen_features import FrozenFeatures
from ..segmentation import MAEDenseEncoderDecoder

MODELS.register_module(name='MAEDenseFrozenViT', module=FrozenViT, force=True)
MODELS.register_module(name='MAEDenseFrozenTimmViT', module=FrozenTimmViT, force=True)


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
class LinearProbeEncoderDecoder(FrozenFeatures, MAEDenseEncoderDecoder):
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
        if not isinstance(self.backbone, FROZEN_BACKBONES):
            raise ConfigError(
                f"model.backbone.type={backbone.get('type')!r}: expected 'MAEDenseFrozenViT' or "
                "'MAEDenseFrozenTimmViT'"
            )
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

    cache_label_dtype = 'uint8'  # 150 classes and the ignore index 255

    def cache_targets(self, data_samples: list) -> Tensor:
        """The fast mode's cached labels: class maps (B, H, W) that fit uint8."""
        labels = torch.stack([s.gt_sem_seg.data[0] for s in data_samples])
        if labels.max() > 255:
            raise ConfigError('labels above 255 do not fit the feature cache (uint8)')
        return labels

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
    """``SegDataPreProcessor`` that also passes cached features (batches with ``features``/``labels``).

    Args:
        label_field: what the cached labels are: ``'gt_sem_seg'`` (class maps, 255 = ignore) or
            ``'gt_depth_map'`` (depth in metres, 0 = invalid).
        **kwargs: ``SegDataPreProcessor`` arguments.
    """

    def __init__(self, label_field: str = 'gt_sem_seg', **kwargs) -> None:
        if label_field not in ('gt_sem_seg', 'gt_depth_map'):
            raise ConfigError(
                f"model.data_preprocessor.label_field={label_field!r}: expected 'gt_sem_seg' or 'gt_depth_map'"
            )
        super().__init__(**kwargs)
        self.label_field = label_field

    def forward(self, data: dict, training: bool = False) -> dict:
        if 'features' not in data:
            return super().forward(data, training)
        data = self.cast_data(data)
        features = torch.stack(list(data['features'])).float()  # fp16 on disk -> fp32 heads
        labels = torch.stack(list(data['labels']))  # (B, H, W)
        if self.label_field == 'gt_sem_seg':
            samples = [SegDataSample(gt_sem_seg=PixelData(data=label[None])) for label in labels.long()]
        else:
            samples = [SegDataSample(gt_depth_map=PixelData(data=d[None].float())) for d in labels]
        return dict(inputs=features, data_samples=samples, precomputed=True)
