# DPT depth head on the frozen MAE ViT-L's blocks 4, 11, 17, 23 (dinov2/hub/depthers.py); the reassembled
# widths follow the backbone (128, 256, 512, 1024). See dpt-depth_mae-base_nyu.py.
_base_ = './dpt-depth_mae-base_nyu.py'

model = dict(
    pretrained='https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_large.pth',
    backbone=dict(embed_dim=1024, depth=24, num_heads=16, layers=[4, 11, 17, 23]),
)
