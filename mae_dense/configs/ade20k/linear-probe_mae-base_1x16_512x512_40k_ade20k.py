# Linear probe of a frozen MAE ViT-B on ADE20K: the linear semantic-segmentation protocol of DINOv2
# (Oquab et al. 2023, "DINOv2: Learning Robust Visual Features without Supervision", Sec. 7.4, and the
# released head config dinov2_vitb14_ade20k_linear_config.py, an mmseg 0.x config).
#
# Published reference (frozen MAE, this protocol): DINOv2 paper, Table 10 "Semantic segmentation on ADE20K,
# CityScapes and Pascal VOC with frozen features and a linear classifier (lin.) and with multiscale (+ms)":
#   MAE ViT-H/14: ADE20K 33.3 mIoU (lin.), 30.7 mIoU (+ms). No ViT-B/L MAE row is published there.
#
# What is followed (DINOv2 linear, ADE20K):
#   * features: the frozen backbone's patch tokens of the LAST block after the final LayerNorm
#     (get_intermediate_layers(..., norm=True); out_indices [8, 9, 10, 11], in_index [3]);
#   * head: BatchNorm (SyncBN) + 1x1 conv to 150 classes (BNHead, no dropout), logits upsampled bilinearly
#     (align_corners=False) to the label size; cross-entropy averaged over all pixels (mmseg's default);
#   * optimiser: AdamW lr 1e-3, betas (0.9, 0.999), weight decay 1e-4 on every head parameter;
#     linear warmup 1500 iterations from 1e-6, then poly (power 1) to 0; 40k iterations; batch 16;
#   * train augmentation: resize to short side 512 x U(0.5, 2.0) with no long-side cap
#     (img_scale=(99999999, 512)), random crop 512 (cat_max_ratio 0.75), flip 0.5, photometric distortion,
#     pad to 512 with 0 after normalisation (ignore 255 for labels);
#   * test: short side 512, sliding windows 512 with stride 341, single scale, no flip.
# Where this deviates, and why:
#   * batch 16 on ONE GPU (DINOv2: 8 x 2): a probe takes one GPU; the same effective batch and lr;
#   * MAE patch 16 (32 x 32 tokens at 512) instead of DINOv2's patch 14 with centre padding;
#   * the backbone runs under fp16 autocast on CUDA (the heads train in fp32, as DINOv2's fp16=None).
#
# Two modes (`mae-dense probe CONFIG --mode fast|augmented`; plain `tools/train.py`/`dist_train.sh` run
# the augmented mode):
#   * augmented: the protocol above, features computed on the fly from freshly augmented crops;
#   * fast (`fast_mode` below): the features of ONE fixed augmented crop per training image are computed
#     once and cached on disk in fp16; the heads of a learning-rate sweep train together on them, the
#     best head is reported (best on the evaluation set, as DINOv2's linear evaluations pick their sweep).
_base_ = [
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py',
]
custom_imports = dict(
    imports=['mae_dense.openmmlab', 'mae_dense.openmmlab.probe'], allow_failed_imports=False
)

data_root = 'data/ade/ADEChallengeData2016'
crop_size = (512, 512)
scale = (99999999, 512)  # short side 512 (x the ratio), long side unbounded: DINOv2's img_scale
embed_dim = 768
layers = [-1]  # the last block
max_iters = 40000
warmup_iters = 1500

model = dict(
    type='LinearProbeEncoderDecoder',
    data_preprocessor=dict(
        type='ProbeDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=crop_size,
    ),
    # Any layout the loader knows (official release, our pretraining output, mmpretrain, ...); None: random.
    pretrained='https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth',
    backbone=dict(
        type='MAEDenseFrozenViT',
        mode='mae',  # the pretrained encoder as it is: its position embedding and final norm
        img_size=512,  # the position table is resized once, at load time
        patch_size=16,
        embed_dim=embed_dim,
        depth=12,
        num_heads=12,
        mlp_ratio=4,
        layers=layers,
        init_seed=0,  # the random backbone when pretrained=None
    ),
    decode_head=dict(
        type='LinearProbeDecodeHead',
        in_channels=embed_dim * len(layers),
        num_classes=150,
        lrs=[1e-3],  # DINOv2's lr; one head per lr (see fast_mode's sweep)
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
    ),
    backbone_amp=True,
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)),
)

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    # no lr here: each head's lr is model.decode_head.lrs
    optimizer=dict(type='AdamW', betas=(0.9, 0.999), weight_decay=1e-4),
    constructor='LinearProbeOptimWrapperConstructor',
)
param_scheduler = [
    # mmcv 0.x's poly x linear warm-up, as DINOv2's config: mmengine multiplies overlapping schedulers and
    # reaches a scheduler's end value at iteration `end - 1`, hence the + 1
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters + 1),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=max_iters + 1, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
# The project's Runner (loaders fitted to the machine, CPU fallbacks, the checkpoint-loading policy) and
# checkpoint hook (atomic saves that survive a kill, a resume that skips a broken newest checkpoint)
runner_type = 'MAEDenseRunner'
default_hooks = dict(
    checkpoint=dict(type='CrashSafeCheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1)
)

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
train_split = dict(
    type='CheckedADE20KDataset',
    data_root=data_root,
    data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
)
train_dataloader = dict(batch_size=16, num_workers=8, dataset=dict(train_split, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    dataset=dict(type='CheckedADE20KDataset', data_root=data_root, pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='ProbeSweepIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# The fast mode: what `mae-dense probe --mode fast` replaces (options given on the command line apply after).
# The fixed crops are the protocol's geometric augmentation drawn once per image with a fixed seed; no
# photometric distortion (one fixed colour jitter per image adds no diversity, only a train/val shift).
# 8 passes over the 20,210 fixed crops (10k iterations x 16; the protocol's 40k x 16 are 32 passes over
# freshly augmented images): more passes over the same crops only fit the same views again.
# Disk: 20,210 crops x 768 x 32 x 32 fp16 = 29.6 GiB of features + 4.9 GiB of labels (ViT-L: 39.5 + 4.9).
fast_iters = 10000
probe_cache_root = 'work_dirs/probe_cache'  # one directory per cache key (shared by runs that can reuse it)
fast_warmup_iters = warmup_iters * fast_iters // max_iters  # the same fraction of the schedule: 375
fixed_crop_pipeline = [t for t in train_pipeline if t['type'] != 'PhotoMetricDistortion']
fast_mode = dict(
    model=dict(decode_head=dict(lrs=[3e-4, 1e-3, 3e-3, 1e-2])),  # the sweep, around DINOv2's 1e-3
    train_dataloader=dict(
        num_workers=4,
        dataset=dict(
            _delete_=True,
            type='ProbeFeatureDataset',
            crops=dict(
                type='ProbeFixedCrops',
                dataset=dict(train_split, pipeline=fixed_crop_pipeline),
                views=1,
                seed=0,
            ),
            dtype='float16',
        ),
    ),
    param_scheduler=[
        dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=fast_warmup_iters + 1),
        dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=fast_iters + 1, by_epoch=False),
    ],
    train_cfg=dict(max_iters=fast_iters, val_interval=fast_iters),
    default_hooks=dict(checkpoint=dict(interval=fast_iters)),
)
