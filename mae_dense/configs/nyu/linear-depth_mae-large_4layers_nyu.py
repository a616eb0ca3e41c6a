# "lin. 4" of a frozen MAE ViT-L: blocks 4, 11, 17, 23 (dinov2/hub/depthers.py, out_index of vit_large;
# not evenly spaced: the paper's l = {5, 12, 18, 24} counted from one). See linear-depth_mae-base_nyu.py.
_base_ = './linear-depth_mae-large_nyu.py'

model = dict(backbone=dict(layers=[4, 11, 17, 23]))
