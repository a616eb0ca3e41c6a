# The pretraining stage of `make demo`: the recipe at toy scale, with the encoder the ADE20K and COCO demo
# configs fine-tune (patch 16, 96-d, 4 blocks, 3 heads), so its checkpoint is their `pretrained` as is.
_base_ = '../pretrain/mae_vit-tiny-p8_1xb16-amp-coslr-10e_synthetic.py'

img_size = 64  # a 4x4 patch grid; the transfer configs resize the position table to their grids
model = dict(
    img_size=img_size,
    patch_size=16,
    embed_dim=96,
    depth=4,
    num_heads=3,
    decoder_embed_dim=64,
    decoder_depth=1,
    decoder_num_heads=4,
)
train_dataloader = dict(dataset=dict(img_size=img_size))
train_cfg = dict(max_epochs=20)
