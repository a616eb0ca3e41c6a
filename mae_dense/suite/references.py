"""The published numbers every report shows beside the reproduced ones, each under its own protocol.

Each :class:`Published` row: benchmark, model size, metric, value in points, source, the pre-training it
measures (``label``) and the :class:`~mae_dense.suite.cards.Protocol` it was measured under. A published
number stands beside ours only under the same protocol; otherwise the leaderboard names the difference.

Sources, checked against the papers:

* MAE paper (He et al., 2021, final text): Table 4 is COCO Mask R-CNN, Table 5 is ADE20K UperNet (Table 3
  is the ImageNet comparison). Appendix A.3/A.4: COCO with ViT adapted to an FPN from 4 equal subsets of
  blocks, 1024 input with large-scale jitter; ADE20K through BEiT's code, 100 epochs at batch 16; lr (and
  more) searched per entry; the relative position bias added at transfer for every row.
* mmseg 0.x ``configs/mae``: 48.13 single scale, 48.70 ms+flip, 160k iterations.
* detectron2 / mmdet ViTDet: SimpleFPN on the last map, 100 epochs = 184,375 iterations at batch 64.
* DINOv2 paper (Oquab et al., 2023) Table 10, ADE20K "lin.": frozen, a linear layer on the last block's
  patch tokens, 512 crops, 40k iterations. Only the MAE ViT-H/14 row (33.3) is listed: its ViT-B/L rows
  and the DINOv3 paper's probe rows could not be checked against the papers' text here, so they are left
  out rather than copied unverified.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cards import Protocol

__all__ = ['REFERENCES', 'Published']

_UPERNET = dict(task='ade20k', frozen=False, head='UPerHead+Feature2Pyramid', input='512x512')
_UPERNET_LAYERS = 'blocks 1/3, 1/2, 2/3, 1 of depth'  # BEiT's and mmseg's out_indices [3, 5, 7, 11] at ViT-B
MAE_PAPER_ADE20K = Protocol(
    **_UPERNET, layers=_UPERNET_LAYERS, ms_flip=False, schedule='100 ep at batch 16 (~126k it)'
)
MMSEG_ADE20K = Protocol(**_UPERNET, layers=_UPERNET_LAYERS, ms_flip=False, schedule='160000 it')
MMSEG_ADE20K_MS = Protocol(**_UPERNET, layers=_UPERNET_LAYERS, ms_flip=True, schedule='160000 it')
MAE_PAPER_COCO = Protocol(
    task='coco',
    frozen=False,
    head='MaskRCNN+FPN',
    layers='blocks 1/4, 1/2, 3/4, 1 of depth',
    input='1024x1024',
    ms_flip=False,
    schedule='100 ep',
)
VITDET_COCO = Protocol(
    task='coco',
    frozen=False,
    head='MaskRCNN+MAEDenseSimpleFPN',  # ViTDet's SimpleFPN, this project's registry name for it
    layers='last block',
    input='1024x1024',
    ms_flip=False,
    schedule='184375 it',
)
DINOV2_LINEAR = Protocol(
    task='probe',
    frozen=True,
    head='LinearProbeDecodeHead',
    layers='last block',
    input='512x512',
    ms_flip=False,
    schedule='40000 it',
)


@dataclass(frozen=True)
class Published:
    """One published number: what, how much, where from, which pre-training, under which protocol."""

    benchmark: str
    model: str
    metric: str
    value: float
    source: str
    label: str
    protocol: Protocol


def _mae_paper(label: str, box: tuple, mask: tuple, miou: tuple) -> list[Published]:
    """One pre-training's rows of the MAE paper's Tables 4 and 5: (ViT-B, ViT-L) each."""
    rows = []
    for i, model in enumerate(('ViT-B', 'ViT-L')):
        if miou[i] is not None:
            rows.append(
                Published('ADE20K', model, 'mIoU', miou[i], 'MAE paper (Table 5)', label, MAE_PAPER_ADE20K)
            )
        for metric, values in (('box AP', box), ('mask AP', mask)):
            if values[i] is not None:
                rows.append(
                    Published('COCO', model, metric, values[i], 'MAE paper (Table 4)', label, MAE_PAPER_COCO)
                )
    return rows


REFERENCES: tuple[Published, ...] = (
    *_mae_paper('supervised IN1K', box=(47.9, 49.3), mask=(42.9, 43.9), miou=(47.4, 49.9)),
    *_mae_paper('MoCo v3', box=(47.9, 49.3), mask=(42.7, 44.0), miou=(47.3, 49.1)),
    *_mae_paper('BEiT', box=(49.8, 53.3), mask=(44.4, 47.1), miou=(47.1, 53.3)),
    *_mae_paper('MAE', box=(50.3, 53.3), mask=(44.9, 47.2), miou=(48.1, 53.6)),
    Published(
        'ADE20K',
        'ViT-B',
        'mIoU',
        48.13,
        'mmseg 0.x upernet_mae-base_fp16_8x2_512x512_160k_ade20k',
        'MAE',
        MMSEG_ADE20K,
    ),
    Published(
        'ADE20K',
        'ViT-B',
        'mIoU ms+flip',
        48.70,
        'mmseg 0.x upernet_mae-base_fp16_512x512_160k_ade20k_ms',
        'MAE',
        MMSEG_ADE20K_MS,
    ),
    Published('COCO', 'ViT-B', 'box AP', 51.6, 'detectron2 ViTDet, 100 ep', 'MAE', VITDET_COCO),
    Published('COCO', 'ViT-B', 'mask AP', 45.9, 'detectron2 ViTDet, 100 ep', 'MAE', VITDET_COCO),
    Published('COCO', 'ViT-L', 'box AP', 55.5, 'detectron2 ViTDet, 100 ep', 'MAE', VITDET_COCO),
    Published('COCO', 'ViT-L', 'mask AP', 49.2, 'detectron2 ViTDet, 100 ep', 'MAE', VITDET_COCO),
    Published('COCO', 'ViT-B', 'box AP', 51.6, 'mmdet ViTDet', 'MAE', VITDET_COCO),
    Published('COCO', 'ViT-B', 'mask AP', 45.7, 'mmdet ViTDet', 'MAE', VITDET_COCO),
    Published(
        'ADE20K linear probe',
        'ViT-H',
        'mIoU',
        33.3,
        'DINOv2 paper (Table 10), lin.',
        'MAE ViT-H/14',
        DINOV2_LINEAR,
    ),
    # NYU Depth v2: DINOv2's Table 11 (RMSE of lin. 1, lin. 4 and DPT; MAE ViT-H/14, DINO, iBOT, OpenCLIP and
    # DINOv2 rows) is not listed yet: its numbers have not been checked against the paper's text here.
)
