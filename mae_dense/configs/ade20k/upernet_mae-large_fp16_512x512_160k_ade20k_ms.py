# ViT-L evaluated with the multi-scale + flip protocol (see the ViT-B _ms config).
_base_ = './upernet_mae-large_fp16_8x2_512x512_160k_ade20k.py'

model = dict(test_cfg={{_base_.ms_flip_test_cfg}})
val_dataloader = dict(dataset=dict(pipeline={{_base_.ms_flip_test_pipeline}}))
test_dataloader = val_dataloader
