# The COCO ViT Mask R-CNN recipe at toy scale on the built-in synthetic COCO (3 classes, 2 CPU cores).
# Same model family (det-mode ViT with windows and global blocks, SimpleFPN, LN heads), LSJ pipeline,
# square padding, optimiser, layer decay, wd policy, AMP wrapper (fp32 fallback on CPU), fp16-compression
# hook and COCO metric as the real config; only sizes, data root, scale range and schedule are scaled down.
_base_ = '../coco/mask-rcnn_vit-b-mae_lsj-100e_coco.py'

data_root = 'data/demo/coco/'  # written by python -m mae_dense.data.synthetic coco
image_size = (128, 128)  # synthetic images have sides of 64-250 px
embed_dim = 96
num_layers = 4
channels = 64  # neck and heads (256 in the real config)
num_classes = 3
max_iters = 200

model = dict(
    data_preprocessor=dict(pad_size_divisor=image_size[0]),
    backbone=dict(
        img_size=image_size[0],
        embed_dim=embed_dim,
        depth=num_layers,
        num_heads=3,
        drop_path_rate=0.0,
        window_size=3,  # an 8x8 grid: windows zero-pad it to 9x9, as ViT-B pads 64 to 70
        global_blocks=(1, 3),
        pretrain_img_size=image_size[0],
        pretrained=None,
    ),
    neck=dict(in_channels=embed_dim, out_channels=channels),
    rpn_head=dict(in_channels=channels, feat_channels=channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels),
        bbox_head=dict(
            in_channels=channels, conv_out_channels=channels, fc_out_channels=256, num_classes=num_classes
        ),
        mask_roi_extractor=dict(out_channels=channels),
        mask_head=dict(in_channels=channels, conv_out_channels=channels, num_classes=num_classes),
    ),
    # fewer proposals and sampled RoIs: a 128 px image has few objects
    train_cfg=dict(rpn_proposal=dict(nms_pre=500, max_per_img=200), rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=200)),
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    # scale range 0.5-1.5 (the recipe: 0.1-2.0): a tenth of 128 px leaves nothing to detect
    dict(type='RandomResize', scale=image_size, ratio_range=(0.5, 1.5), keep_ratio=True),
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
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root, classes_from_ann_file=True, filter_cfg=dict(min_size=16), pipeline=train_pipeline
    ),
)
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, classes_from_ann_file=True, pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(lr=4e-4),
    paramwise_cfg=dict(num_layers=num_layers, layer_decay_rate=0.9),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[160, 190], gamma=0.1),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
