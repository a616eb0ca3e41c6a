# The ViT-B linear probe (see its config) on the last FOUR blocks: each block's patch tokens through the
# final LayerNorm, concatenated (4 x 768 channels), then the same BatchNorm + 1x1 conv head. This is the
# feature set of DINOv2's "+ms" setting (Oquab et al. 2023, Sec. 7.4: "concatenate the patch tokens of the
# 4 last layers"); its larger resolution (640) and multi-scale test are NOT used here: everything else is
# the linear protocol, so the two configs differ only by the blocks read.
# Published reference: DINOv2 paper, Table 10: MAE ViT-H/14 ADE20K 33.3 mIoU (lin.), 30.7 mIoU (+ms:
# 4 blocks, 640, multi-scale test); no ViT-B MAE row.
# Fast mode disk: 4x the single-block cache, 118.4 GiB of features + 4.9 GiB of labels; on a smaller disk
# use --cfg-options train_dataloader.dataset.crops.num_crops=N (evenly spaced crops) or the augmented mode.
_base_ = './linear-probe_mae-base_1x16_512x512_40k_ade20k.py'

embed_dim = 768
layers = [-4, -3, -2, -1]
model = dict(backbone=dict(layers=layers), decode_head=dict(in_channels=embed_dim * len(layers)))
