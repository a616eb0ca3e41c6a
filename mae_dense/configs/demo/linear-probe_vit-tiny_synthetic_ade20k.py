# `make demo`'s linear probe: the ADE20K linear-probe protocol at toy scale on the built-in synthetic data
# (2 CPU cores, under a minute per mode). Same frozen MAE-mode ViT, BN + 1x1 conv heads, optimiser,
# schedule shape, sliding-window test and both modes (augmented; fast with cached features and an lr sweep)
# as the real config; only sizes, data root, learning rates and schedule are scaled down. The encoder is
# the pretraining demo's (patch 16, 96-d, 4 blocks, 3 heads), so its checkpoint is `pretrained` as is.
_base_ = '../ade20k/linear-probe_mae-base_1x16_512x512_40k_ade20k.py'

data_root = 'data/demo/ade/ADEChallengeData2016'  # written by python -m mae_dense.data.synthetic ade20k
crop_size = (128, 128)
scale = (99999999, 128)  # the real short side 512 divided by 4
embed_dim = 96
max_iters = 30
warmup_iters = 5

model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,  # `mae-dense pipeline` passes its own tiny MAE here
    backbone=dict(img_size=128, embed_dim=embed_dim, depth=4, num_heads=3),
    decode_head=dict(in_channels=embed_dim, lrs=[3e-2]),  # 30 iterations: a larger lr than the real 1e-3
    test_cfg=dict(crop_size=crop_size, stride=(85, 85)),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters + 1),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=max_iters + 1, by_epoch=False),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_iters))

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
fixed_crop_pipeline = [t for t in train_pipeline if t['type'] != 'PhotoMetricDistortion']
loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(batch_size=4, **loader, dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(**loader, dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

fast_iters = 30
fast_mode = dict(
    model=dict(decode_head=dict(lrs=[1e-2, 3e-2, 1e-1])),
    train_dataloader=dict(
        num_workers=0,
        dataset=dict(crops=dict(dataset=dict(data_root=data_root, pipeline=fixed_crop_pipeline))),
    ),
    param_scheduler=[
        dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters + 1),
        dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=fast_iters + 1, by_epoch=False),
    ],
    train_cfg=dict(max_iters=fast_iters, val_interval=fast_iters),
    default_hooks=dict(checkpoint=dict(interval=fast_iters)),
)
