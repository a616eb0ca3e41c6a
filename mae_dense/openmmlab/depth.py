"""Monocular depth from frozen features on mmseg's ``DepthEstimator`` (registered on import).

DINOv2's depth protocols (Oquab et al. 2023, Sec. 7.4 and Table 11; ``dinov2/hub/depthers.py`` and
``dinov2/eval/depth/models/decode_heads``): a frozen ViT read at one or four blocks, each block's patch
tokens with its cls token concatenated, and one of two heads:

* :class:`LinearDepthBinsHead` ("lin. 1" / "lin. 4"): a 1x1 convolution to 256 depth bins, the scores
  upsampled x4, read out by linear normalisation (AdaBins' ``norm_strategy='linear'``);
* :class:`DPTDepthHead`: mmseg's DPT decoder (reassemble, fusion blocks) with DINOv2's depth output
  (two 3x3 convolutions around a x2 upsampling, a 1x1 convolution to one channel, ReLU + min depth).

:class:`DepthProbeEstimator` is mmseg's ``DepthEstimator`` with the linear probe's frozen backbone
(:class:`~mae_dense.models.probe.FrozenViT`) and its fast mode: the probe command caches the features of
fixed crops once and trains the head on them (:mod:`mae_dense.openmmlab.probe`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmseg.datasets import NYUDataset
from mmseg.models.decode_heads import DPTHead
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.segmentors import DepthEstimator
from mmseg.registry import DATASETS, MODELS
from mmseg.structures import SegDataSample
from torch import Tensor, nn

from ..data.nyu import check_nyu_dirs, check_pairs, read_file_list
from ..errors import ConfigError
from ..models.probe import FROZEN_BACKBONES
from ..models.timm_backbone import timm_arch
from .frozen_features import FrozenFeatures

__all__ = ['CheckedNYUDataset', 'DPTDepthHead', 'DepthProbeEstimator', 'LinearDepthBinsHead', 'bins_readout']

_SILOG = dict(type='SiLogLoss', loss_weight=1.0)


def bins_readout(logits: Tensor, min_depth: float, max_depth: float, eps: float = 0.1) -> Tensor:
    """Depth from bin scores by linear normalisation: (B, K, H, W) -> (B, 1, H, W).

    p_k = (relu(s_k) + eps) / sum_j (relu(s_j) + eps); depth = sum_k p_k c_k with c the K bin centres
    spaced uniformly over [min_depth, max_depth] (DINOv2's ``bins_strategy='UD'``, eps 0.1).
    """
    weights = torch.relu(logits) + eps
    weights = weights / weights.sum(dim=1, keepdim=True)
    centres = torch.linspace(min_depth, max_depth, logits.shape[1], device=logits.device, dtype=logits.dtype)
    return torch.einsum('bkhw,k->bhw', weights, centres).unsqueeze(1)


def _gt_depth(batch_data_samples: Sequence[SegDataSample]) -> Tensor:
    """The samples' depth maps stacked: (B, 1, H, W), metres, 0 = invalid."""
    return torch.stack([s.gt_depth_map.data for s in batch_data_samples])


class _DepthLoss:
    """The loss of both heads: the prediction resized to the labels (bilinear), then ``loss_decode``."""

    loss_decode: nn.Module
    align_corners: bool

    def loss(self, inputs, batch_data_samples: list, train_cfg=None) -> dict:
        gt = _gt_depth(batch_data_samples)
        pred = self.forward(inputs)
        if pred.shape[2:] != gt.shape[2:]:
            pred = F.interpolate(pred, size=gt.shape[2:], mode='bilinear', align_corners=self.align_corners)
        return {self.loss_decode.loss_name: self.loss_decode(pred, gt)}


@MODELS.register_module(force=True)
class LinearDepthBinsHead(_DepthLoss, BaseDecodeHead):
    """DINOv2's linear depth head: (optional BatchNorm) + 1x1 conv to ``n_bins`` scores, x``upsample``,
    linear-normalisation read-out (:func:`bins_readout`).

    DINOv2 upsamples the features x4 before the 1x1 convolution; a 1x1 convolution commutes with bilinear
    upsampling (whose weights sum to one), so the scores are computed at the patch grid and upsampled:
    the same output for 1/16 of the work. With ``norm_cfg`` (a BatchNorm) the statistics are taken at the
    patch grid. DINOv2's released head has no norm (``BNHead``'s BatchNorm is commented out).

    Args:
        in_channels: feature channels (layers x 2 x width: patch and cls tokens).
        n_bins: depth bins (256).
        min_depth, max_depth: the bins' range in metres (NYU: 0.001, 10).
        upsample: factor of the scores' upsampling before the read-out (4).
        norm_cfg: a norm before the convolution (None: none, as DINOv2).
        loss_decode: mmseg loss on the depth map (default ``SiLogLoss``).
    """

    def __init__(
        self,
        in_channels: int,
        n_bins: int = 256,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        upsample: int = 4,
        norm_cfg: dict | None = None,
        loss_decode: dict | None = None,
        align_corners: bool = False,
        init_cfg: dict | None = None,
    ) -> None:
        if not 0 <= min_depth < max_depth or n_bins < 2 or upsample < 1:
            raise ConfigError(
                f'model.decode_head: min_depth={min_depth}, max_depth={max_depth}, n_bins={n_bins}, '
                f'upsample={upsample}: expected 0 <= min_depth < max_depth, n_bins >= 2, upsample >= 1'
            )
        super().__init__(
            in_channels=in_channels,
            channels=in_channels,
            num_classes=n_bins,
            dropout_ratio=0.0,
            norm_cfg=norm_cfg,
            loss_decode=loss_decode or _SILOG,
            align_corners=align_corners,
            init_cfg=init_cfg or dict(type='Normal', std=0.01, override=dict(name='conv_seg')),
        )
        self.out_channels = 1  # the prediction's channels (the estimator's inference sizes its buffers so)
        self.bn = build_norm_layer(norm_cfg, in_channels)[1] if norm_cfg else nn.Identity()
        self.n_bins, self.min_depth, self.max_depth, self.upsample = n_bins, min_depth, max_depth, upsample

    def forward(self, inputs: Sequence[Tensor] | Tensor) -> Tensor:
        """(B, C, h, w) features -> (B, 1, h*upsample, w*upsample) depth in metres."""
        x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        logits = self.conv_seg(self.bn(x))  # (B, n_bins, h, w)
        if self.upsample > 1:
            size = (logits.shape[2] * self.upsample, logits.shape[3] * self.upsample)
            logits = F.interpolate(logits, size=size, mode='bilinear', align_corners=self.align_corners)
        return bins_readout(logits, self.min_depth, self.max_depth)


@MODELS.register_module(force=True)
class DPTDepthHead(_DepthLoss, DPTHead):
    """mmseg's ``DPTHead`` (reassemble with the cls-token read-out, fusion blocks) as a depth regressor.

    The input is :class:`FrozenViT`'s ``cls_token=True`` map, (B, L*2C, h, w): each layer's patch map then
    its broadcast cls token; it is split into the ``[map, cls]`` pairs mmseg's reassemble blocks take. The
    classifier is replaced by DINOv2's depth output: 3x3 conv to channels/2, x2 bilinear, 3x3 conv to 32,
    ReLU, 1x1 conv to 1; depth = ReLU(output) + min_depth.

    Args:
        embed_dims: the backbone's width C.
        post_process_channels: the four reassembled widths (DINOv2: C/8, C/4, C/2, C).
        min_depth, max_depth: metres (max_depth is kept for the record; the output is not capped).
        **kwargs: ``DPTHead`` arguments (channels 256, readout_type 'project').
    """

    def __init__(
        self,
        embed_dims: int = 768,
        post_process_channels: Sequence[int] = (96, 192, 384, 768),
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        channels: int = 256,
        readout_type: str = 'project',
        loss_decode: dict | None = None,
        **kwargs,
    ) -> None:
        layers = len(post_process_channels)
        super().__init__(
            in_channels=[embed_dims] * layers,
            in_index=tuple(range(layers)),
            input_transform='multiple_select',
            channels=channels,
            num_classes=1,
            out_channels=1,
            threshold=0.5,  # unused: silences mmseg's binary-segmentation warning
            embed_dims=embed_dims,
            post_process_channels=list(post_process_channels),
            readout_type=readout_type,
            loss_decode=loss_decode or _SILOG,
            **kwargs,
        )
        self.conv_seg = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=3, padding=1),
            nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True),
            nn.Conv2d(channels // 2, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 1, kernel_size=1),
        )
        self.embed_dims, self.min_depth, self.max_depth = embed_dims, min_depth, max_depth

    def forward(self, inputs: Sequence[Tensor] | Tensor) -> Tensor:
        """(B, L*2C, h, w) features -> (B, 1, 16h, 16w) depth in metres for even h, w (the four fusion
        blocks and the output each upsample x2 from the coarsest reassembled map, ceil(h/2)); the loss and
        the prediction resize it to the labels / the input as mmseg's heads do."""
        x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        c = self.embed_dims
        pairs = [
            [x[:, 2 * i * c : (2 * i + 1) * c], x[:, (2 * i + 1) * c : (2 * i + 2) * c, 0, 0]]
            for i in range(len(self.convs))
        ]  # L x [(B, C, h, w), (B, C)]
        return torch.relu(super().forward(pairs)) + self.min_depth


def _fit_head(backbone: dict, decode_head: dict) -> dict:
    """The head's widths from the backbone's where the config leaves them out (a backbone of any size
    then needs only its own numbers): the linear head's ``in_channels`` (layers x width, x2 with the cls
    token), the DPT head's ``embed_dims`` and ``post_process_channels`` (DINOv2: C/8, C/4, C/2, C)."""
    head = dict(decode_head)
    if 'model_name' in backbone:  # a timm backbone: its width from the model built on the meta device
        width = timm_arch(backbone['model_name'], backbone.get('timm_kwargs')).embed_dim
    else:
        width = int(backbone.get('embed_dim', 768))
    layers = len(backbone.get('layers', (-1,)))
    if head.get('type') == 'LinearDepthBinsHead' and head.get('in_channels') is None:
        head['in_channels'] = width * layers * (2 if backbone.get('cls_token') else 1)
    if head.get('type') == 'DPTDepthHead':
        head.setdefault('embed_dims', width)
        head.setdefault('post_process_channels', [width // 2 ** (layers - 1 - i) for i in range(layers)])
    return head


@DATASETS.register_module(force=True)
class CheckedNYUDataset(NYUDataset):
    """mmseg's ``NYUDataset``, checked on disk before it lists its files, or read from a file list.

    Without ``file_list``: ``check_nyu_dirs`` on the split's two directories first (unpaired files, 8-bit or
    mis-sized depth PNGs, a missing split: one line naming the file), then mmseg's own listing. With
    ``file_list`` (the BTS lists of the ~24k-image raw-scene split: ``<image> <depth> <focal>`` per line,
    relative to ``data_prefix.img_path`` and ``data_prefix.depth_map_path``): exactly the listed pairs.
    """

    def __init__(self, *args, file_list: str | None = None, **kwargs) -> None:
        self.file_list = file_list
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        img_dir, ann_dir = self.data_prefix.get('img_path'), self.data_prefix.get('depth_map_path')
        if self.file_list is None:
            if self.backend_args is None and img_dir and ann_dir:
                check_nyu_dirs(img_dir, ann_dir)
            return super().load_data_list()
        root = Path(self.data_root or '')
        pairs = read_file_list(root / self.file_list, img_dir, ann_dir)
        check_pairs(pairs)
        return [
            dict(
                img_path=str(image),
                depth_map_path=str(depth),
                seg_fields=[],
                category_id=self._get_category_id_from_filename(Path(image).parent.name + '_0'),
            )
            for image, depth in pairs
        ]


@MODELS.register_module(force=True)
class DepthProbeEstimator(FrozenFeatures, DepthEstimator):
    """mmseg's ``DepthEstimator`` on a frozen :class:`FrozenViT` (no neck, no auxiliary head).

    ``forward(..., precomputed=True)`` takes cached features instead of images (the fast mode; the probe's
    ``ProbeDataPreProcessor`` sets the flag).

    Args:
        backbone_amp: run the backbone under fp16 autocast on CUDA (the head stays fp32).
        **kwargs: ``DepthEstimator`` arguments.
    """

    cache_label_dtype = 'float32'  # depth in metres

    def __init__(self, backbone: dict, decode_head: dict, backbone_amp: bool = True, **kwargs) -> None:
        if kwargs.get('neck') or kwargs.get('auxiliary_head'):
            raise ConfigError(
                'DepthProbeEstimator: a frozen-feature depth probe has no neck or auxiliary head'
            )
        decode_head = _fit_head(backbone, decode_head)
        super().__init__(backbone=backbone, decode_head=decode_head, **kwargs)
        if not isinstance(self.backbone, FROZEN_BACKBONES):
            raise ConfigError(
                f"model.backbone.type={backbone.get('type')!r}: expected 'MAEDenseFrozenViT' or "
                "'MAEDenseFrozenTimmViT'"
            )
        self._check_head(decode_head.get('type'))
        self.backbone_amp = backbone_amp

    def _check_head(self, head_type: str | None) -> None:
        head, backbone = self.decode_head, self.backbone
        if isinstance(head, DPTDepthHead):
            if (
                not backbone.read_cls
                or len(backbone.layers) != len(head.convs)
                or head.embed_dims != backbone.embed_dim
            ):
                raise ConfigError(
                    f'model.decode_head (DPT, {len(head.convs)} layers of {head.embed_dims}): the backbone '
                    f'must read {len(head.convs)} layers of its {backbone.embed_dim} channels with cls_token=True'
                )
        elif isinstance(head, LinearDepthBinsHead):
            if head.in_channels != backbone.feature_channels:
                raise ConfigError(
                    f'model.decode_head.in_channels={head.in_channels}: the backbone gives '
                    f'{backbone.feature_channels} ({len(backbone.layers)} blocks x {backbone.embed_dim}'
                    f'{" x 2 with the cls token" if backbone.read_cls else ""})'
                )
        else:
            raise ConfigError(
                f"model.decode_head.type={head_type!r}: expected 'LinearDepthBinsHead' or 'DPTDepthHead'"
            )

    def cache_targets(self, data_samples: list[SegDataSample]) -> Tensor:
        """The fast mode's cached labels: depth maps (B, H, W) in metres."""
        return _gt_depth(data_samples)[:, 0]
