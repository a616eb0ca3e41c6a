# MAE pretraining on ImageNet-1k through mmengine's Runner: mmpretrain's MAE recipe
# (configs/mae/mae_vit-{base,large,huge}-p{16,14}_8xb512-amp-coslr-{300..1600}e_in1k.py), whose names and
# published fine-tuning numbers the children carry. It is the official recipe (facebookresearch/mae
# PRETRAIN.md: batch 4096, blr 1.5e-4, AdamW (0.9, 0.95), wd 0.05, 40 warm-up epochs, cosine, mask 0.75,
# norm_pix) with mmpretrain's two differences: cls_token and mask_token get no weight decay, and the warm-up
# starts at 1e-4 of the lr instead of 0. The official main_pretrain.py's decay set:
# --cfg-options optim_wrapper.paramwise_cfg.wd_policy=official. Every number of the recipe is stated here
# once; the children only choose the ViT size and the number of epochs. Not a runnable config by itself.
custom_imports = dict(
    imports=['mae_dense.openmmlab', 'mae_dense.openmmlab.pretrain'], allow_failed_imports=False
)

img_size = 224
# The encoder sees the 25% visible patches only; loss on the removed patches, on per-patch normalised pixels.
model = dict(
    type='MAEPretrainer',
    img_size=img_size,
    mask_ratio=0.75,
    norm_pix_loss=True,
    # compile=True: regional torch.compile of the encoder and decoder blocks (same loss; opt-in, see
    # benchmarks/RESULTS.md); fused AdamW: --cfg-options optim_wrapper.optimizer.fused=True
    compile=False,
    # uint8 batches are normalised on the GPU with torchvision's ImageNet statistics x 255
    data_preprocessor=dict(
        type='MAEDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]
    ),
)

# ImageNet layout: data/imagenet/train/<class>/*.JPEG (or any folder of images, flat or in sub-folders);
# another folder: --cfg-options train_dataloader.dataset.data_root=DIR
data_root = 'data/imagenet'
train_dataloader = dict(
    batch_size=512,  # per GPU: 8 GPUs x 512 = the recipe's effective batch 4096
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='MAEImageFolder',
        data_root=data_root,
        split='train',
        img_size=img_size,
        scale=(0.2, 1.0),  # RandomResizedCrop area range, bicubic; then a horizontal flip (p = 0.5)
        interpolation='bicubic',
        hflip_prob=0.5,
    ),
)

# Mixed precision that is really on: fp16 autocast + dynamic loss scale as the official code
# (--cfg-options optim_wrapper.dtype=bfloat16 for bf16); on a machine without CUDA it falls back to fp32.
optim_wrapper = dict(
    type='SkipNonFiniteAmpOptimWrapper',  # mmengine's AmpOptimWrapper + non-finite losses skipped
    dtype='float16',
    loss_scale='dynamic',
    max_nonfinite_in_a_row=20,  # then stop with one line rather than burn GPU hours on NaNs
    # Fewer GPUs, same recipe: keep batch_size x accumulative_counts x GPUs = 4096, e.g. 8 x 128 x 4 or
    # 2 x 512 x 4; the lr below follows the effective batch, so nothing else changes.
    accumulative_counts=1,
    optimizer=dict(type='AdamW', betas=(0.9, 0.95), weight_decay=0.05),  # no lr here: computed, see below
    constructor='MAEPretrainOptimWrapperConstructor',
    # lr = base_lr x effective batch / base_batch_size, effective batch = batch_size x accumulative_counts
    # x world size = 512 x 1 x 8 = 4096, so lr = 1.5e-4 x 4096 / 256 = 2.4e-3 (printed at start).
    # mmengine's auto_scale_lr would ignore accumulative_counts, hence this constructor. No weight decay
    # for norms, biases, pos_embed, cls_token, mask_token (mmpretrain's set; 'official' decays the tokens).
    paramwise_cfg=dict(base_lr=1.5e-4, base_batch_size=256, wd_policy='mmpretrain'),
)
warmup_epochs = 40
param_scheduler = [
    # linear warm-up per iteration from 1e-4 of the lr, as mmpretrain (mmengine needs a start factor > 0;
    # the official code starts at 0)
    dict(
        type='LinearLR',
        start_factor=1e-4,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True,
    ),
    # half-cycle cosine to 0, per iteration; `end` defaults to train_cfg.max_epochs (set by the children)
    dict(
        type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=warmup_epochs, convert_to_iter_based=True
    ),
]
train_cfg = dict(type='MAEPretrainLoop')  # epochs: in the children
val_cfg = None
test_cfg = None

# The project's Runner (loaders fitted to the machine, CPU fallbacks, the checkpoint-loading policy) and
# checkpoint hook (atomic saves that survive a kill, a resume that skips a broken newest checkpoint)
runner_type = 'MAEDenseRunner'
default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # every epoch (312 iterations at 4096), the 3 latest kept: a killed run loses less than an epoch
    checkpoint=dict(type='CrashSafeCheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
# RNG states in every checkpoint (exact resume); strict loading of full MAE checkpoints; skip counts.
custom_hooks = [dict(type='RandomStateHook'), dict(type='MAEPretrainHook')]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),  # tools/train.py switches to gloo on a machine without CUDA
)
# Each process draws its own crops and masks (seed + rank); the sampler's shuffle is shared.
randomness = dict(seed=0, diff_rank_seed=True)
log_processor = dict(window_size=10, by_epoch=True)
log_level = 'INFO'
# Training curves also in TensorBoard (`tensorboard --logdir work_dirs`), beside mmengine's local JSON logs.
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(type='Visualizer', vis_backends=vis_backends)
load_from = None  # a previous run's checkpoint to continue from (weights only; needs resume=False)
resume = True  # auto-resume from the work dir's latest checkpoint when relaunched (fresh start if none)
