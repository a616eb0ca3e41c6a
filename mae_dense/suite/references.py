"""The published numbers every report shows beside the reproduced ones.

Each row: (benchmark, model, metric, value in points, source). Benchmarks and metrics are named as the
suite names its columns: ``ADE20K`` (mIoU, mIoU ms+flip), ``COCO`` (box AP, mask AP) and
``ADE20K linear probe`` (mIoU).
"""

from __future__ import annotations

REFERENCES: tuple[tuple[str, str, str, float, str], ...] = (
    ('ADE20K', 'ViT-B', 'mIoU', 48.1, 'MAE paper (Table 3)'),
    ('ADE20K', 'ViT-L', 'mIoU', 53.6, 'MAE paper (Table 3)'),
    ('ADE20K', 'ViT-B', 'mIoU', 48.13, 'mmseg 0.x upernet_mae-base_fp16_8x2_512x512_160k_ade20k'),
    ('ADE20K', 'ViT-B', 'mIoU ms+flip', 48.70, 'mmseg 0.x upernet_mae-base_fp16_512x512_160k_ade20k_ms'),
    ('COCO', 'ViT-B', 'box AP', 50.3, 'MAE paper (Table 4)'),
    ('COCO', 'ViT-B', 'mask AP', 44.9, 'MAE paper (Table 4)'),
    ('COCO', 'ViT-L', 'box AP', 53.3, 'MAE paper (Table 4)'),
    ('COCO', 'ViT-L', 'mask AP', 47.2, 'MAE paper (Table 4)'),
    ('COCO', 'ViT-B', 'box AP', 51.6, 'detectron2 ViTDet, 100 ep'),
    ('COCO', 'ViT-B', 'mask AP', 45.9, 'detectron2 ViTDet, 100 ep'),
    ('COCO', 'ViT-L', 'box AP', 55.5, 'detectron2 ViTDet, 100 ep'),
    ('COCO', 'ViT-L', 'mask AP', 49.2, 'detectron2 ViTDet, 100 ep'),
    ('COCO', 'ViT-B', 'box AP', 51.6, 'mmdet ViTDet'),
    ('COCO', 'ViT-B', 'mask AP', 45.7, 'mmdet ViTDet'),
    # Frozen features and a linear head (DINOv2's protocol); no MAE ViT-B/L row is published.
    ('ADE20K linear probe', 'ViT-H', 'mIoU', 33.3, 'DINOv2 paper (Table 10), MAE ViT-H/14, lin.'),
    # NYU Depth v2: DINOv2's Table 11 (RMSE of lin. 1, lin. 4 and DPT; MAE ViT-H/14, DINO, iBOT, OpenCLIP and
    # DINOv2 rows) is not listed yet: its numbers have not been checked against the paper's text here.
)
