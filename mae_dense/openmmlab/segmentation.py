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
"""

from __future__ import annotations

import torch
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from torch import Tensor

from ..models.dense_inference import ms_flip_probs, slide_logits
from . import datasets  # noqa: F401  (registers CheckedADE20KDataset, which the ADE20K configs use)

_AUG_KEYS = {'scale', 'ratios', 'min_size', 'flip'}


@MODELS.register_module(force=True)
class MAEDenseEncoderDecoder(EncoderDecoder):
    """``EncoderDecoder`` whose ``slide_inference`` streams the windows in chunks of at most
    ``test_cfg.max_batch`` (16) crops, fewer when memory is short (``dense_inference.auto_max_batch``;
    ``test_cfg.fit_memory=False``: exactly ``max_batch``)."""

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
