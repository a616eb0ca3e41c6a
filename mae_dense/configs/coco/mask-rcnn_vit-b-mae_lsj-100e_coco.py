# ViT Mask R-CNN (ViTDet) + MAE ViT-B on COCO, LSJ 100 epochs: detectron2 projects/ViTDet
# mask_rcnn_vitdet_b_100ep (51.6 box / 45.9 mask AP; mmdet's port 51.6 / 45.7).
# Every number of the recipe is stated here once; the rest comes from mmdet's own base files.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::common/lsj-100e_coco-instance.py',
]
# The published number this file reproduces (listed by `mae-dense configs`; not inherited).
published = {'box AP': 51.6, 'mask AP': 45.9, 'source': 'detectron2 ViTDet'}
custom_imports = dict(
    imports=['mae_dense.openmmlab', 'mae_dense.openmmlab.detection'], allow_failed_imports=False
)

image_size = (1024, 1024)
embed_dim = 768
num_layers = 12
# detectron2's channel LayerNorm (over C at every pixel) in the neck and in every conv of the heads
norm_cfg = dict(type='LN2d', eps=1e-6, requires_grad=True)

model = dict(
    # Square padding to 1024 as detectron2's square_pad: every image reaches the model at most 1024 px a
    # side (LSJ crop, test resize), so padding each batch to a multiple of 1024 pads it to exactly 1024x1024,
    # after normalisation (0 = the pixel mean) and with img_shape left at the real image, so proposals and
    # boxes are clipped to it. The test image is padded too: the position embedding is then resized to the
    # same 64x64 grid as in training. (A pipeline Pad would count the padding as image: boxes in it survive
    # and mmdet's CPU mask pasting fails on them.)
    data_preprocessor=dict(pad_size_divisor=image_size[0]),
    backbone=dict(
        _delete_=True,
        type='MAEDenseViT',
        mode='det',
        img_size=image_size[0],
        patch_size=16,
        embed_dim=embed_dim,
        depth=num_layers,
        num_heads=12,
        mlp_ratio=4,
        drop_path_rate=0.1,
        window_size=14,  # global attention in blocks 2, 5, 8, 11: the backbone's default for 12 blocks
        pretrain_img_size=224,  # the 14x14 position table of the checkpoint, resized to 64x64 at run time
        # Any layout the loader knows: the official release (below), our pretraining output, ViTDet, ...
        pretrained='https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth',
        # Speed options (same results): attn_impl='auto' uses FlexAttention on CUDA (the decomposed bias read
        # in the kernel), compile=True compiles each block (torch.compile); both off until measured on a GPU
        # (benchmarks/RESULTS.md).
        attn_impl='sdpa',
        compile=False,
    ),
    neck=dict(
        _delete_=True,
        type='MAEDenseSimpleFPN',
        in_channels=embed_dim,
        out_channels=256,
        scale_factors=(4.0, 2.0, 1.0, 0.5),  # strides 4, 8, 16, 32; P6 (stride 64) for the RPN
        num_outs=5,
    ),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead', conv_out_channels=256, fc_out_channels=1024, norm_cfg=norm_cfg
        ),
        mask_head=dict(norm_cfg=norm_cfg),
    ),
)

# Large-scale jitter (the padding to 1024 is done by the data preprocessor, above)
data_root = 'data/coco/'
dataset_type = 'CheckedCocoDataset'
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(
        type='RandomCrop',
        crop_type='absolute_range',
        crop_size=image_size,
        recompute_bbox=True,
        allow_negative_crop=True,
    ),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# 16 GPUs x 4 images = batch 64 (detectron2 ran 64 GPUs x 1; mmdet's port 16 x 4)
train_dataloader = dict(
    batch_size=4,
    num_workers=8,
    sampler=dict(type='InfiniteSampler', shuffle=True),  # iteration-based, as detectron2's TrainingSampler
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    dataset=dict(type=dataset_type, data_root=data_root, pipeline=test_pipeline),
)
test_dataloader = val_dataloader
# mmdet's CocoMetric, except that a test set without a single detection scores AP 0.0 (one warning line)
val_evaluator = dict(
    type='CocoMetricScoringNoDetections',
    ann_file=data_root + 'annotations/instances_val2017.json',
    metric=['bbox', 'segm'],
)
test_evaluator = val_evaluator

# Mixed precision that is really on; AdamW with layer-wise lr decay and detectron2's weight-decay groups
# (no decay for the backbone's LayerNorms and pos_embed; biases and relative position tables are decayed).
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    dtype='float16',
    loss_scale='dynamic',
    # fused=True: torch's one-kernel AdamW, the same update in fewer passes over memory (benchmarks/RESULTS.md)
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1, fused=True),
    constructor='ViTLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=num_layers, layer_decay_rate=0.7, wd_policy='vitdet'),
)
# 100 epochs = 184,375 iterations x 64 images / 118,000 images
max_iters = 184375
param_scheduler = [
    # detectron2's linear warm-up over 250 iterations from 0.001; mmengine's LinearLR reaches its end value at
    # iteration `end - 1`, hence 251
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=251),
    # x0.1 for the last 1/9 and again for the last 1/27 of training: 184375 x 8/9 and 184375 x 26/27
    dict(
        type='MultiStepLR',
        by_epoch=False,
        begin=0,
        end=max_iters,
        milestones=[163889, 177546],
        gamma=0.1,
    ),
]
interval = 5000  # validation and checkpoint period (not part of the recipe)
# ExactResumeIterBasedTrainLoop: mmengine's, but a relaunch after a crash continues exactly (the sampler is
# replayed instead of reloading every trained batch; RandomStateHook carries the RNG states)
train_cfg = dict(
    _delete_=True, type='ExactResumeIterBasedTrainLoop', max_iters=max_iters, val_interval=interval
)
# The project's Runner (loaders fitted to the machine, CPU fallbacks, the checkpoint-loading policy) and
# checkpoint hook (atomic saves that survive a kill, a resume that skips a broken newest checkpoint)
runner_type = 'MAEDenseRunner'
default_hooks = dict(
    # validation metrics logged at their iteration (mmdet's default logs them at the epoch, 0 here)
    logger=dict(interval=50, log_metric_by_epoch=False),
    checkpoint=dict(
        type='CrashSafeCheckpointHook', by_epoch=False, interval=interval, save_last=True, max_keep_ckpts=2
    ),
)
log_processor = dict(by_epoch=False)
# DDP gradients all-reduced in fp16 (detectron2's train.ddp.fp16_compression); a no-op without CUDA DDP.
custom_hooks = [dict(type='Fp16CompressionHook'), dict(type='RandomStateHook')]
resume = True  # relaunching resumes from the newest readable checkpoint (fresh start if none)
auto_scale_lr = dict(base_batch_size=64)
# Training curves also in TensorBoard (`tensorboard --logdir work_dirs`), beside mmengine's local JSON logs.
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(vis_backends=vis_backends)
