# DPT head on the frozen ViT-B's blocks 2, 5, 8, 11 (DINOv2's "DPT" column of Table 11;
# dinov2/hub/depthers.py _make_dinov2_dpt_depth_head): mmseg's DPT decoder with the cls-token
# 'project' read-out, 256 channels, reassembled widths C/8, C/4, C/2, C (96, 192, 384, 768), and DINOv2's
# depth output (3x3 conv, x2, 3x3 conv to 32, ReLU, 1x1 conv; ReLU + 0.001 m), regressing depth (SiLog loss).
# Everything else is the linear probe's recipe (see linear-depth_mae-base_nyu.py): DINOv2's DPT recipe is
# a hosted config not checked here, so its lr/schedule are those of the linear probe (a deviation row).
_base_ = './linear-depth_mae-base_nyu.py'

model = dict(
    backbone=dict(layers=[2, 5, 8, 11]),
    decode_head=dict(
        _delete_=True,
        type='DPTDepthHead',
        channels=256,
        readout_type='project',
        min_depth=1e-3,
        max_depth=10.0,
        loss_decode=dict(type='SiLogLoss', loss_weight=1.0),
    ),
)
