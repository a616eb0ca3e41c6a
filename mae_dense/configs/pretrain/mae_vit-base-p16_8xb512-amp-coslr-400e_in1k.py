# MAE ViT-B/16, 400 epochs (mmpretrain reports fine-tune 83.3, linear 62.5).
# 512 per GPU peaks at 26 GiB (fp16, measured on one H200: 3300 images/s).
_base_ = './_base_mae_in1k.py'
# The published number this file reproduces (listed by `mae-dense configs`; not inherited).
published = {'fine-tune top-1': 83.3, 'linear top-1': 62.5, 'source': 'mmpretrain'}
model = dict(arch='base')
train_cfg = dict(max_epochs=400)
