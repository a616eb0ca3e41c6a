# ViT Mask R-CNN (ViTDet) + MAE ViT-L on COCO, LSJ 100 epochs: detectron2 projects/ViTDet
# mask_rcnn_vitdet_l_100ep (55.5 box / 49.2 mask AP). Only what differs from ViT-B is stated here.
_base_ = './mask-rcnn_vit-b-mae_lsj-100e_coco.py'
# The published number this file reproduces (listed by `mae-dense configs`; not inherited).
published = {'box AP': 55.5, 'mask AP': 49.2, 'source': 'detectron2 ViTDet'}

embed_dim = 1024
num_layers = 24
model = dict(
    backbone=dict(
        embed_dim=embed_dim,
        depth=num_layers,
        num_heads=16,
        drop_path_rate=0.4,
        # global attention in blocks 5, 11, 17, 23: the backbone's default for 24 blocks
        pretrained='https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_large.pth',
    ),
    neck=dict(in_channels=embed_dim),
)
optim_wrapper = dict(paramwise_cfg=dict(num_layers=num_layers, layer_decay_rate=0.8))
