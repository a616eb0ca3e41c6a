# mmseg 0.x's configs/mae/upernet_mae-base_fp16_512x512_160k_ade20k_ms.py: same training, evaluated with multi-scale (0.5-1.75 of 2048x512, short side never
# under 512) + flip and sliding windows at every scale, softmax averaged (48.70 mIoU for ViT-B).
# mmseg 1.x's "-ms" config is single-scale (its TODO replaces MultiScaleFlipAug); this one is not.
_base_ = './upernet_mae-base_fp16_8x2_512x512_160k_ade20k.py'
# The published number this file reproduces (listed by `mae-dense configs`; not inherited).
published = {'mIoU ms+flip': 48.70, 'source': 'mmseg 0.x'}

model = dict(test_cfg={{_base_.ms_flip_test_cfg}})
val_dataloader = dict(dataset=dict(pipeline={{_base_.ms_flip_test_pipeline}}))
test_dataloader = val_dataloader
