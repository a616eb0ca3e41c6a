"""What a frozen-feature segmentor adds to mmseg's (the ADE20K linear probe, the NYU depth probes): the
backbone's features under fp16 autocast on CUDA, and a training forward on precomputed features (the fast
mode's cached crops)."""

from __future__ import annotations

import torch
from torch import Tensor


class FrozenFeatures:
    """Mixed into an mmseg segmentor whose backbone is frozen; the segmentor sets ``backbone_amp``."""

    backbone_amp: bool

    def backbone_features(self, inputs: Tensor) -> Tensor:
        """Frozen features (B, C', h, w) in fp32 (computed under fp16 autocast on CUDA)."""
        with torch.autocast('cuda', dtype=torch.float16, enabled=self.backbone_amp and inputs.is_cuda):
            features = self.backbone(inputs)
        return features.float()

    def extract_feat(self, inputs: Tensor, batch_img_metas: list[dict] | None = None) -> list[Tensor]:
        return [self.backbone_features(inputs)]

    def forward(self, inputs: Tensor, data_samples=None, mode: str = 'tensor', precomputed: bool = False):
        """mmseg's forward; ``precomputed=True`` (training only): ``inputs`` are features, not images."""
        if precomputed:
            if mode != 'loss':
                raise ValueError(f'precomputed features are for training (mode="loss"), got mode={mode!r}')
            return self._decode_head_forward_train([inputs], data_samples)
        return super().forward(inputs, data_samples, mode)
