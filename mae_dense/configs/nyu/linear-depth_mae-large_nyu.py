# "lin. 1" depth probe of a frozen MAE ViT-L: the ViT-B config (see it for the protocol and deviations)
# with the ViT-L encoder and its last block (23 of 24); the head's width follows the backbone (2 x 1024).
_base_ = './linear-depth_mae-base_nyu.py'

model = dict(
    pretrained='https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_large.pth',
    backbone=dict(embed_dim=1024, depth=24, num_heads=16, layers=[23]),
)
