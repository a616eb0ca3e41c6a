# UperNet + MAE ViT-B on ADE20K: mmseg 0.x's configs/mae/upernet_mae-base_fp16_8x2_512x512_160k_ade20k.py
# (48.13 mIoU single scale; 48.70 with ms+flip), reproduced by default; the README lists the deviations.
# Every number of the recipe is stated here once; the rest comes from mmseg's own base files.
_base_ = [
    'mmseg::_base_/models/upernet_mae.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
# The published number this file reproduces (listed by `mae-dense configs`; not inherited).
published = {'mIoU': 48.13, 'source': 'mmseg 0.x'}
custom_imports = dict(
    imports=['mae_dense.openmmlab', 'mae_dense.openmmlab.segmentation'], allow_failed_imports=False
)

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
        # Speed options (same results): attn_impl='auto' uses FlexAttention on CUDA (the BEiT bias read in the
        # kernel), compile=True compiles each block (torch.compile); both off until measured on a GPU
        # (benchmarks/RESULTS.md).
        attn_impl='sdpa',
        compile=False,
    ),
    neck=dict(embed_dim=768, rescales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[768, 768, 768, 768], num_classes=150, channels=768),
    auxiliary_head=dict(in_channels=768, num_classes=150),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)),
)

# Mixed precision, as the name says (AmpOptimWrapper: fp16 autocast + dynamic loss scale). The mmseg 0.x run
# behind 48.13 trained in fp32: its `fp16=dict(loss_scale='dynamic')` was read only by 0.x's test tool,
# which evaluated in fp16. To train in fp32 like that run: --cfg-options optim_wrapper.dtype=float32
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    dtype='float16',
    loss_scale='dynamic',
    # fused=True: torch's one-kernel AdamW, the same update in fewer passes over memory (benchmarks/RESULTS.md)
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05, fused=True),
    constructor='ViTLayerDecayOptimizerConstructor',
    # mmseg's groups, as in the published run: only 1-D parameters and biases are exempt from weight
    # decay; pos_embed, cls_token and the relative position tables ARE decayed (mmseg's exemption of them
    # never matched). wd_policy='mae' exempts them as the official MAE fine-tuning does.
    paramwise_cfg=dict(num_layers=num_layers, layer_decay_rate=0.65, wd_policy='mmseg'),
)
# mmseg 0.x's schedule shape: poly decay over all 160k iterations, multiplied by the linear warm-up
# (mmengine multiplies schedulers whose ranges overlap):
#   lr(t) = 1e-4 * (1 - t / 160000) * (1e-6 + (1 - 1e-6) * min(t, 1500) / 1500)
# mmengine's LinearLR and PolyLR reach their end value at iteration `end - 1`, hence 1501 and 160001.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1501),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=160001, by_epoch=False),
]

# Evaluation in fp32; fp16=True evaluates under fp16 autocast, nearest to 0.x's fp16 test (README deviations).
test_cfg = dict(type='TestLoop', fp16=False)

# Relaunching the same command after a crash resumes from the newest readable checkpoint, exactly: the loop
# replays the sampler instead of reloading every trained batch, and the RNG states travel in the checkpoint.
train_cfg = dict(type='ExactResumeIterBasedTrainLoop')
custom_hooks = [dict(type='RandomStateHook')]
resume = True  # fresh start when the work dir holds no checkpoint; load_from needs resume=False
# The project's Runner (loaders fitted to the machine, CPU fallbacks, the checkpoint-loading policy) and
# checkpoint hook (atomic saves that survive a kill, a resume that skips a broken newest checkpoint)
runner_type = 'MAEDenseRunner'
default_hooks = dict(checkpoint=dict(type='CrashSafeCheckpointHook'))

# 8 GPUs x 2 images = batch 16
train_dataloader = dict(batch_size=2, dataset=dict(type='CheckedADE20KDataset'))
val_dataloader = dict(batch_size=1, dataset=dict(type='CheckedADE20KDataset'))
test_dataloader = val_dataloader

# mmseg 0.x's multi-scale + flip protocol (mmseg 0.x MultiScaleFlipAug with Resize(min_size=512)); used by
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
