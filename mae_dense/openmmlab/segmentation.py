"""mmseg segmentor with batched sliding windows and the ms+flip protocol in ``test_cfg``.

Importing this module (``custom_imports=dict(imports=['mae_dense.openmmlab',
'mae_dense.openmmlab.segmentation'])``, as the ADE20K configs do) registers ``MAEDenseEncoderDecoder``
and ``CheckedADE20KDataset`` in mmseg's registries (the ViT, ``MAEDenseViT`` in mmengine's, is found from
mmseg's).

``test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341))`` gives mmseg's single-scale
sliding-window result (windows batched); adding
``aug=dict(scale=(2048, 512), ratios=[0.5, ..., 1.75], min_size=512, flip=True)`` gives mmseg 0.x's
multi-scale + flip protocol on the original image (the test pipeline then must not resize). Because it
lives in the model, any runner (ours, mmseg's tools/test.py, validation during training) does the same.

``train_cfg=dict(loss_band_rows=64)`` (opt-in) computes every head's loss without the full-resolution
logits: the upsampling and the cross-entropy run by bands of 64 label rows (:mod:`~mae_dense.models.seg_loss`);
the loss, its gradient and ``acc_seg`` equal mmseg's ``loss_by_feat`` (a plain ``CrossEntropyLoss``).
"""

from __future__ import annotations

import torch
from mmseg.models.losses import CrossEntropyLoss
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from torch import Tensor, nn

from ..errors import ConfigError
from ..models.dense_inference import ms_flip_probs, slide_logits
from ..models.seg_loss import upsampled_cross_entropy
from . import ade20k  # noqa: F401  (registers CheckedADE20KDataset, which the ADE20K configs use)

_AUG_KEYS = {'scale', 'ratios', 'min_size', 'flip'}


@MODELS.register_module(force=True)
class MAEDenseEncoderDecoder(EncoderDecoder):
    """``EncoderDecoder`` whose ``slide_inference`` streams the windows in chunks of at most
    ``test_cfg.max_batch`` (16) crops, fewer when memory is short (``dense_inference.auto_max_batch``;
    ``test_cfg.fit_memory=False``: exactly ``max_batch``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.loss_band_rows = (self.train_cfg or {}).get('loss_band_rows')
        if self.loss_band_rows is None:
            return
        if not isinstance(self.loss_band_rows, int) or self.loss_band_rows < 1:
            raise ConfigError(
                f'model.train_cfg.loss_band_rows={self.loss_band_rows!r}: expected a positive int'
            )
        heads = [('decode_head', self.decode_head)]
        if self.with_auxiliary_head:
            aux = self.auxiliary_head
            heads += (
                [(f'auxiliary_head[{i}]', h) for i, h in enumerate(aux)]
                if isinstance(aux, nn.ModuleList)
                else [('auxiliary_head', aux)]
            )
        for name, head in heads:
            for loss in _head_losses(head):
                plain = isinstance(loss, CrossEntropyLoss) and not (loss.use_sigmoid or loss.use_mask)
                if not plain or loss.class_weight is not None or loss.reduction != 'mean' or head.sampler:
                    raise ConfigError(
                        f'model.train_cfg.loss_band_rows: model.{name} has {type(loss).__name__}'
                        f'{" with a sampler" if head.sampler else ""}; the banded loss computes a plain '
                        'CrossEntropyLoss (mean, no class_weight, no sampler) only: remove loss_band_rows'
                    )

    def _head_loss(self, head, inputs: list[Tensor], data_samples) -> dict:
        # mmseg's BaseDecodeHead.loss (forward + loss_by_feat), with the upsampling and the cross-entropy
        # done by bands of rows instead of on the full-resolution logits
        label = head._stack_batch_gt(data_samples).squeeze(1)
        loss_sum, correct, valid = upsampled_cross_entropy(
            head.forward(inputs), label, head.ignore_index, head.align_corners, self.loss_band_rows
        )
        eps = torch.finfo(torch.float32).eps  # (mmseg's, in its mean reduction and its accuracy)
        losses: dict[str, Tensor] = {}
        for loss in _head_losses(head):
            value = loss.loss_weight * loss_sum / ((valid if loss.avg_non_ignore else label.numel()) + eps)
            losses[loss.loss_name] = losses[loss.loss_name] + value if loss.loss_name in losses else value
        losses['acc_seg'] = ((correct + eps) * (100.0 / (valid + eps))).reshape(1)
        return losses

    def _decode_head_forward_train(self, inputs: list[Tensor], data_samples) -> dict:
        if self.loss_band_rows is None:
            return super()._decode_head_forward_train(inputs, data_samples)
        return {f'decode.{k}': v for k, v in self._head_loss(self.decode_head, inputs, data_samples).items()}

    def _auxiliary_head_forward_train(self, inputs: list[Tensor], data_samples) -> dict:
        if self.loss_band_rows is None:
            return super()._auxiliary_head_forward_train(inputs, data_samples)
        aux = self.auxiliary_head
        named = {f'aux_{i}': h for i, h in enumerate(aux)} if isinstance(aux, nn.ModuleList) else {'aux': aux}
        return {
            f'{prefix}.{k}': v
            for prefix, head in named.items()
            for k, v in self._head_loss(head, inputs, data_samples).items()
        }

    def slide_inference(self, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
        crop, stride = tuple(self.test_cfg.crop_size), tuple(self.test_cfg.stride)
        metas = [dict(batch_img_metas[0])]

        def encode(x: Tensor) -> Tensor:
            # A torch.Size img_shape is how mmseg's decode heads tell a window from a (padded) image: with a
            # tuple they would resize the window's logits to the meta's pad_shape.
            metas[0]['img_shape'] = x.shape[2:]
            return self.encode_decode(x, metas)

        max_batch, fit = self.test_cfg.get('max_batch', 16), self.test_cfg.get('fit_memory', True)
        return slide_logits(encode, inputs, self.out_channels, crop, stride, max_batch, fit)

    def predict(self, inputs: Tensor, data_samples=None):
        aug = self.test_cfg.get('aug') if self.test_cfg else None
        if not aug:
            return super().predict(inputs, data_samples)
        unknown = set(aug) - _AUG_KEYS
        if unknown:
            raise ValueError(
                f'model.test_cfg.aug has unknown keys {sorted(unknown)}; expected {sorted(_AUG_KEYS)}'
            )
        metas = (
            [s.metainfo for s in data_samples]
            if data_samples
            else [dict(ori_shape=inputs.shape[2:])] * len(inputs)
        )
        probs = []
        for i in range(inputs.shape[0]):  # test batches are one unpadded image at its original size
            image = inputs[i : i + 1]
            meta = dict(metas[i], img_shape=tuple(image.shape[2:]))

            def encode_image(x: Tensor, meta=meta) -> Tensor:
                return self.inference(
                    x, [dict(meta, img_shape=tuple(x.shape[2:]), ori_shape=tuple(x.shape[2:]))]
                )

            probs.append(
                ms_flip_probs(
                    encode_image,
                    image,
                    out_size=tuple(meta['ori_shape']),
                    align_corners=self.align_corners,
                    **aug,
                )
            )
        if data_samples is not None:  # the scores are already at the original size, unflipped and unpadded
            for s in data_samples:
                s.set_metainfo(dict(padding_size=[0, 0, 0, 0], img_padding_size=[0, 0, 0, 0], flip=False))
        return self.postprocess_result(torch.cat(probs), data_samples)


def _head_losses(head) -> list[nn.Module]:
    return list(head.loss_decode) if isinstance(head.loss_decode, nn.ModuleList) else [head.loss_decode]
