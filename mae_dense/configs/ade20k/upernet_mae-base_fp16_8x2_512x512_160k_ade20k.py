# UperNet + MAE ViT-B on ADE20K, the seed's recipe (mmseg 0.x name; 48.13 mIoU single scale, 48.70 ms+flip).
# Every number of the recipe is stated here once; the rest comes from mmseg's own base files.
_base_ = [
    'mmseg::_base_/models/upernet_mae.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['mae_dense.openmmlab'], allow_failed_imports=False)

crop_size = (512, 512)
num_layers = 12
model = dict(
    type='MAEDenseEncoderDecoder',
    data_preprocessor=dict(size=crop_size),
    # Any layout the loader knows: the official release (below), our pretraining output, mmpretrain, ...
    pretrained='https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth',
    backbone=dict(
        _delete_=True,
        type='MAEDenseViT',
        mode='seg',
        img_size=512,
        patch_size=16,
        embed_dim=768,
        depth=num_layers,
        num_heads=12,
        mlp_ratio=4,
        init_values=1.0,  # MAE's value; mmseg's base file has 0.1, which shrinks every residual branch
        drop_path_rate=0.1,
        out_indices=[3, 5, 7, 11],
    ),
    neck=dict(embed_dim=768, rescales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[768, 768, 768, 768], num_classes=150, channels=768),
    auxiliary_head=dict(in_channels=768, num_classes=150),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)),
)

# Mixed precision that is really on (mmseg's config says fp16=dict(...), which nothing reads).
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='ViTLayerDecayOptimizerConstructor',
    # wd_policy='mmseg' reproduces mmseg's groups exactly (pos_embed, cls_token, tables decayed)
    paramwise_cfg=dict(num_layers=num_layers, layer_decay_rate=0.65, wd_policy='mae'),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]

# 8 GPUs x 2 images = batch 16
train_dataloader = dict(batch_size=2, dataset=dict(type='CheckedADE20KDataset'))
val_dataloader = dict(batch_size=1, dataset=dict(type='CheckedADE20KDataset'))
test_dataloader = val_dataloader

# The seed's multi-scale + flip protocol (mmseg 0.x MultiScaleFlipAug with Resize(min_size=512)); used by
# the _ms config and by `tools/test.py --tta/--aug-test`. The model resizes per scale, so the pipeline does not.
ms_flip_test_cfg = dict(
    mode='slide',
    crop_size=crop_size,
    stride=(341, 341),
    aug=dict(scale=(2048, 512), ratios=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75], min_size=512, flip=True),
)
ms_flip_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
# Training curves also in TensorBoard (`tensorboard --logdir work_dirs`), beside mmengine's local JSON logs.
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(vis_backends=vis_backends)
