# The pretraining recipe at toy scale on a synthetic image folder (2 CPU cores, well under a minute):
# same model class, optimiser, lr rule, AMP wrapper (fp32 fallback on CPU), schedule shape and hooks as
# the ImageNet configs. Data: python -m mae_dense.data.synthetic image-folder -o data/demo/pretrain
_base_ = './_base_mae_in1k.py'

img_size = 32
# A toy size given by its dimensions (arch=None): img 32, patch 8, 64-d 2 blocks 4 heads; decoder 32-d 1 block
model = dict(
    arch=None,
    img_size=img_size,
    patch_size=8,
    embed_dim=64,
    depth=2,
    num_heads=4,
    decoder_embed_dim=32,
    decoder_depth=1,
    decoder_num_heads=4,
)
train_dataloader = dict(
    batch_size=16,  # 1 process x 16; 64 images = 4 iterations per epoch
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(data_root='data/demo/pretrain', img_size=img_size),
)
# a toy needs a larger step than ImageNet: lr = 0.06 x 16 / 256 = 3.75e-3
optim_wrapper = dict(paramwise_cfg=dict(base_lr=0.06))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=1, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=10)
default_hooks = dict(logger=dict(interval=4), checkpoint=dict(interval=5, max_keep_ckpts=1, save_last=True))
resume = False  # the demo starts from scratch every time
