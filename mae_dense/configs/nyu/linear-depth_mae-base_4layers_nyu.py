# "lin. 4": the ViT-B linear depth probe (see its config) on four evenly spaced blocks, 2, 5, 8 and 11
# (dinov2/hub/depthers.py, out_index of vit_base; the paper's l = {3, 6, 9, 12} counted from one), each
# block's patch tokens with its cls token, concatenated (4 x 2 x 768 channels), then the same 256-bin head.
# Fast mode disk: 4x the single-block cache, 31.9 GiB of features + 2.7 GiB of depths.
_base_ = './linear-depth_mae-base_nyu.py'

model = dict(backbone=dict(layers=[2, 5, 8, 11]))
