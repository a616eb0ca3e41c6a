# `make demo`'s depth probe: DINOv2's "lin. 1" depth protocol (configs/nyu/linear-depth_mae-base_nyu.py) at toy
# scale on the built-in synthetic NYU (96 x 128 images; 2 CPU cores, ~30 s per backbone in fast mode). Same
# frozen MAE-mode ViT read without the final norm with its cls token, 256-bin head with linear
# normalisation, SiLog loss, optimiser and schedule shape, whole-image + flip test and DepthMetric; only
# sizes, data root, the lr and the schedule are scaled down, and no Eigen crop (it is defined on 480 x 640).
# The encoder is the pretraining demo's (patch 16, 96-d, 4 blocks, 3 heads).
_base_ = '../nyu/linear-depth_mae-base_nyu.py'

data_root = 'data/demo/nyu'  # written by python -m mae_dense.data.synthetic nyu
crop_size = (80, 112)
test_size = (96, 128)
embed_dim = 96
lr = 2e-2  # 60 iterations: a larger lr than the real 5e-3
max_iters = 60
warmup_iters = 20

model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,  # `mae-dense pipeline` passes its own tiny MAE here
    backbone=dict(img_size=128, embed_dim=embed_dim, depth=4, num_heads=3, layers=[3]),
    test_cfg=dict(crop_size=test_size, stride=test_size),
)
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters + 1),
    dict(type='CosineAnnealingLR', eta_min=lr * 1e-8, by_epoch=False, begin=0, end=max_iters + 1),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=max_iters))

meta_keys = ('img_path', 'depth_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor', 'flip',
             'flip_direction', 'category_id')  # fmt: skip
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),
    dict(type='RandomRotate', prob=0.5, degree=2.5, pad_val=0, seg_pad_val=0),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
fixed_crop_pipeline = [t for t in train_pipeline if t['type'] != 'PhotoMetricDistortion']
loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(batch_size=8, **loader, dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(**loader, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(crop_type=None)  # the Eigen crop's rows and columns are those of 480 x 640
test_evaluator = val_evaluator

fast_iters = 60
fast_mode = dict(
    train_dataloader=dict(
        num_workers=0,
        dataset=dict(crops=dict(dataset=dict(data_root=data_root, pipeline=fixed_crop_pipeline), views=2)),
    ),
    param_scheduler=[
        dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters + 1),
        dict(type='CosineAnnealingLR', eta_min=lr * 1e-8, by_epoch=False, begin=0, end=fast_iters + 1),
    ],
    train_cfg=dict(max_iters=fast_iters, val_interval=fast_iters),
    default_hooks=dict(checkpoint=dict(interval=fast_iters)),
)
