# UperNet + MAE ViT-L on ADE20K. Neither mmseg nor the MAE repository publishes a ViT-L config: these are
# our settings (ViT-B's recipe at ViT-L's size), not the run behind the paper's 53.6 mIoU, which came from
# a per-entry learning-rate search (MAE paper, Table 5 and its appendix).
_base_ = './upernet_mae-base_fp16_8x2_512x512_160k_ade20k.py'
published = None  # no published run has these settings

num_layers = 24
model = dict(
    pretrained='https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_large.pth',
    backbone=dict(embed_dim=1024, depth=num_layers, num_heads=16, out_indices=[7, 11, 15, 23]),
    neck=dict(embed_dim=1024),
    decode_head=dict(in_channels=[1024, 1024, 1024, 1024], channels=1024),
    auxiliary_head=dict(in_channels=1024),
)
# ViT-B's decay rate: the MAE paper does not list the rate its ViT-L segmentation run used.
optim_wrapper = dict(paramwise_cfg=dict(num_layers=num_layers, layer_decay_rate=0.65))
