# "lin. 1" depth probe of a frozen MAE ViT-B on NYU Depth v2: DINOv2's linear depth protocol (Oquab et al.
# 2023, Sec. 7.4 and Table 11; head and layers from dinov2/hub/depthers.py and
# dinov2/eval/depth/models/decode_heads/{decode_head,linear_head}.py; recipe from its hosted
# dinov2_vitb14_nyu_linear_config.py, an mmseg 0.x config).
#
# Published reference: DINOv2 paper, Table 11 (NYUd RMSE, lin. 1 / lin. 4 / DPT), with an MAE ViT-H/14 row;
# its numbers are not in this project's references (not verified here against the paper's text).
#
# What is followed:
#   * features: the frozen backbone's LAST block (index 11 of 12), patch tokens WITHOUT the final norm
#     (get_intermediate_layers(norm=False)), each concatenated with the block's cls token (2 x 768 channels);
#   * head: 1x1 conv to 256 depth bins uniform over [0.001, 10] m, scores upsampled x4 (bilinear,
#     align_corners=False), linear normalisation ((relu(s) + 0.1) / sum) and the expected bin centre;
#     no BatchNorm (the released BNHead has its BatchNorm commented out);
#   * optimiser: AdamW lr 5e-3, betas (0.9, 0.999), weight decay 0.01; gradient clipping at norm 35;
#     linear warmup over 12,800 iterations from 1e-3 x lr times a cosine over all 38,400 iterations to
#     1e-8 x lr (mmcv 0.x's warmup multiplies the regular schedule, as mmengine's overlapping schedulers);
#   * train augmentation: rotation +-2.5 degrees (p 0.5), flip 0.5, random crop 416 x 544, colour jitter;
#   * test: the 654 official test images at 480 x 640, whole image averaged with its flip; DepthMetric with
#     the Eigen crop (mmseg's 'nyu_crop') and depths in (0.001, 10) m.
# Where this deviates, and why (the README's deviations table):
#   * training set: the 795 official training images (the labeled .mat); DINOv2 trains on the ~24k-image
#     raw-scene split of BTS (CheckedNYUDataset's file_list reads that split's lists:
#     --cfg-options train_dataloader.dataset.file_list=nyudepthv2_train_files_with_gt.txt ...);
#   * loss: mmseg's SiLogLoss alone; DINOv2 adds a gradient loss (weight 0.5) and warms its SigLoss up;
#   * train crop: no Eigen crop before the random crop; colour jitter is mmseg's PhotoMetricDistortion;
#   * MAE patch 16 (26 x 34 tokens per crop) instead of DINOv2's patch 14 with centre padding;
#   * batch 16 on one GPU (DINOv2's config: 2 per GPU; 8 GPUs assumed, its GPU count is not in the file).
#
# Two modes, as the ADE20K linear probe (`mae-dense probe CONFIG --mode fast|augmented`): fast caches the
# features of 4 fixed augmented crops per training image once and trains the head on them.
_base_ = ['mmseg::_base_/default_runtime.py']
custom_imports = dict(
    imports=['mae_dense.openmmlab', 'mae_dense.openmmlab.probe', 'mae_dense.openmmlab.depth'],
    allow_failed_imports=False,
)

data_root = 'data/nyu'
crop_size = (416, 544)
test_size = (480, 640)
layers = [11]  # the last of 12 blocks (positive: a backbone of another depth moves it to its last)
min_depth, max_depth = 1e-3, 10.0
max_iters = 38400
warmup_iters = 12800
lr = 5e-3

model = dict(
    type='DepthProbeEstimator',
    data_preprocessor=dict(
        type='ProbeDataPreProcessor',
        label_field='gt_depth_map',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=0,  # padded depth = 0 = invalid
        size=crop_size,
    ),
    pretrained='https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth',
    backbone=dict(
        type='MAEDenseFrozenViT',
        mode='mae',
        img_size=512,  # the position table is resized to each input's grid
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4,
        layers=layers,
        norm=False,  # DINOv2's depthers read the blocks without the final norm
        cls_token=True,
        init_seed=0,
    ),
    # in_channels: from the backbone (layers x width x 2)
    decode_head=dict(
        type='LinearDepthBinsHead',
        n_bins=256,
        min_depth=min_depth,
        max_depth=max_depth,
        upsample=4,
        loss_decode=dict(type='SiLogLoss', loss_weight=1.0),
    ),
    backbone_amp=True,
    test_cfg=dict(mode='slide_flip', crop_size=test_size, stride=test_size),  # one window: whole + flip
)

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=lr, betas=(0.9, 0.999), weight_decay=0.01),
    clip_grad=dict(max_norm=35, norm_type=2),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters + 1),
    dict(type='CosineAnnealingLR', eta_min=lr * 1e-8, by_epoch=False, begin=0, end=max_iters + 1),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
runner_type = 'MAEDenseRunner'
default_hooks = dict(  # mmseg's schedule hooks (its default_runtime has none)
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CrashSafeCheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)

meta_keys = ('img_path', 'depth_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor', 'flip',
             'flip_direction', 'category_id')  # fmt: skip
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),  # 16-bit millimetres -> metres
    dict(type='RandomRotate', prob=0.5, degree=2.5, pad_val=0, seg_pad_val=0),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
train_split = dict(
    type='CheckedNYUDataset',
    data_root=data_root,
    data_prefix=dict(img_path='images/train', depth_map_path='annotations/train'),
)
train_dataloader = dict(
    batch_size=16,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(train_split, pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CheckedNYUDataset',
        data_root=data_root,
        test_mode=True,
        data_prefix=dict(img_path='images/test', depth_map_path='annotations/test'),
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(
    type='DepthMetric', min_depth_eval=min_depth, max_depth_eval=max_depth, crop_type='nyu_crop'
)
test_evaluator = val_evaluator

# The fast mode (`mae-dense probe --mode fast`): 4 fixed crops per training image (3,180 for the 795
# images; no colour jitter), their features cached once in fp16; 6,400 iterations x 16 = 32 passes over
# them, the warmup the same third of the schedule. One head, one lr (no sweep).
# Disk (ViT-B, lin. 1): 3,180 x 1,536 x 26 x 34 fp16 = 8.0 GiB of features + 2.7 GiB of depths (fp32).
fast_iters = 6400
probe_cache_root = 'work_dirs/probe_cache'
fast_warmup_iters = warmup_iters * fast_iters // max_iters
fixed_crop_pipeline = [t for t in train_pipeline if t['type'] != 'PhotoMetricDistortion']
fast_mode = dict(
    train_dataloader=dict(
        num_workers=4,
        dataset=dict(
            _delete_=True,
            type='ProbeFeatureDataset',
            crops=dict(
                type='ProbeFixedCrops',
                dataset=dict(train_split, pipeline=fixed_crop_pipeline),
                views=4,
                seed=0,
            ),
            dtype='float16',
        ),
    ),
    param_scheduler=[
        dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=fast_warmup_iters + 1),
        dict(type='CosineAnnealingLR', eta_min=lr * 1e-8, by_epoch=False, begin=0, end=fast_iters + 1),
    ],
    train_cfg=dict(max_iters=fast_iters, val_interval=fast_iters),
    default_hooks=dict(checkpoint=dict(interval=fast_iters)),
)
