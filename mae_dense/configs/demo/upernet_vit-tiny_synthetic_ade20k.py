# `make demo`: the ADE20K recipe at toy scale on the built-in synthetic data (2 CPU cores, a few minutes).
# Same model family, optimiser, layer decay, AMP wrapper (fp32 fallback on CPU), sliding windows and the
# ms+flip protocol as the real config; only sizes, data root and schedule are scaled down.
_base_ = '../ade20k/upernet_mae-base_fp16_8x2_512x512_160k_ade20k.py'

data_root = 'data/demo/ade/ADEChallengeData2016'  # written by python -m mae_dense.data.synthetic ade20k
crop_size = (128, 128)
scale = (512, 128)  # the real (2048, 512) divided by 4
embed_dim = 96
num_layers = 4
max_iters = 300

model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,  # `mae-dense pipeline` passes its own tiny MAE here
    # patch 16 as the real model (and as the COCO demo, so one pretrained checkpoint serves both)
    backbone=dict(
        img_size=128,
        patch_size=16,
        embed_dim=embed_dim,
        depth=num_layers,
        num_heads=3,
        drop_path_rate=0.0,
        out_indices=[0, 1, 2, 3],
    ),
    neck=dict(embed_dim=embed_dim),
    decode_head=dict(in_channels=[embed_dim] * 4, channels=64),
    auxiliary_head=dict(in_channels=embed_dim, channels=32),
    test_cfg=dict(crop_size=crop_size, stride=(85, 85)),
)
optim_wrapper = dict(
    optimizer=dict(lr=1e-3),
    paramwise_cfg=dict(num_layers=num_layers, layer_decay_rate=0.9),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=max_iters, by_epoch=False),  # x warm-up, as 0.x
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=25),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1),
)
log_processor = dict(by_epoch=False)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline),
)
test_dataloader = val_dataloader
ms_flip_test_cfg = dict(crop_size=crop_size, stride=(85, 85), aug=dict(scale=scale, min_size=128))
