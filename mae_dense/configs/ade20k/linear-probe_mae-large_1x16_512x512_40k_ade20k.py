# Linear probe of a frozen MAE ViT-L on ADE20K: DINOv2's linear protocol, as the ViT-B config (see there
# for what is followed and where it deviates); only the backbone size and its released weights differ.
# Published reference (frozen MAE, this protocol): DINOv2 paper (Oquab et al. 2023), Table 10:
#   MAE ViT-H/14: ADE20K 33.3 mIoU (lin.), 30.7 mIoU (+ms). No ViT-L MAE row is published there.
# Fast mode disk: 20,210 crops x 1024 x 32 x 32 fp16 = 39.5 GiB of features + 4.9 GiB of labels.
_base_ = './linear-probe_mae-base_1x16_512x512_40k_ade20k.py'

embed_dim = 1024
layers = [-1]
model = dict(
    pretrained='https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_large.pth',
    backbone=dict(embed_dim=embed_dim, depth=24, num_heads=16, layers=layers),
    decode_head=dict(in_channels=embed_dim * len(layers)),
)
