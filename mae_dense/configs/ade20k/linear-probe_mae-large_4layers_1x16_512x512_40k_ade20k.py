# The ViT-L linear probe on the last four blocks concatenated (4 x 1024 channels); see the ViT-B 4-block
# config for what this follows. Published reference: DINOv2 paper, Table 10: MAE ViT-H/14 ADE20K 33.3 mIoU
# (lin.), 30.7 mIoU (+ms); no ViT-L MAE row.
# Fast mode disk: 158 GiB of features + 4.9 GiB of labels (see the ViT-B 4-block config for smaller disks).
_base_ = './linear-probe_mae-large_1x16_512x512_40k_ade20k.py'

embed_dim = 1024
layers = [-4, -3, -2, -1]
model = dict(backbone=dict(layers=layers), decode_head=dict(in_channels=embed_dim * len(layers)))
