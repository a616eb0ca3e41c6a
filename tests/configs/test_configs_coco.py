"""Every COCO config: its recipe values, its full model doing one training step at reduced input size, and
its ``pretrained`` path loading every checkpoint layout through the project's loader."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import randomize_

from mae_dense.models import MaskedAutoencoder, VisionTransformer

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / 'configs' / 'coco').glob('*.py'))
BASE = ROOT / 'configs' / 'coco' / 'mask-rcnn_vit-b-mae_lsj-100e_coco.py'


def _load(path: Path, pretrained: str | None = None):
    from mmengine.config import Config

    cfg = Config.fromfile(str(path))
    cfg.model.backbone.pretrained = pretrained  # no download here; the layouts are tested below
    return cfg


def _build(cfg):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import mae_dense.openmmlab  # noqa: F401
    import mae_dense.openmmlab.detection  # noqa: F401

    register_all_modules(init_default_scope=True)
    return MODELS.build(cfg.model)


def det_batch(n: int = 1, size: int = 128, num_classes: int = 80, seed: int = 0) -> dict:
    """Random uint8 images with three boxes and their (box-shaped) masks each, as a dataloader gives them."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(n):
        inputs.append(torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8))
        xy = torch.randint(0, size // 2, (3, 2), generator=g).float()
        wh = torch.randint(16, size // 2, (3, 2), generator=g).float()
        boxes = torch.cat([xy, xy + wh], dim=1)
        masks = np.zeros((3, size, size), np.uint8)
        for k, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
            masks[k, y0:y1, x0:x1] = 1
        s = DetDataSample(
            metainfo=dict(img_shape=(size, size), ori_shape=(size, size), scale_factor=(1.0, 1.0))
        )
        s.gt_instances = InstanceData(
            bboxes=boxes,
            labels=torch.randint(0, num_classes, (3,), generator=g),
            masks=BitmapMasks(masks, size, size),
        )
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def test_there_are_the_configs():
    assert {p.name for p in CONFIGS} >= {
        'mask-rcnn_vit-b-mae_lsj-100e_coco.py',
        'mask-rcnn_vit-l-mae_lsj-100e_coco.py',
    }


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_recipe_values(path):
    from mmengine.config import Config

    cfg = Config.fromfile(str(path))
    large = '-l-' in path.name
    assert cfg.custom_imports.imports == ['mae_dense.openmmlab', 'mae_dense.openmmlab.detection']
    bb = cfg.model.backbone
    assert (bb.type, bb.mode, bb.img_size, bb.patch_size, bb.window_size, bb.pretrain_img_size) == (
        'MAEDenseViT',
        'det',
        1024,
        16,
        14,
        224,
    )
    assert (bb.embed_dim, bb.depth, bb.num_heads, bb.drop_path_rate) == (
        (1024, 24, 16, 0.4) if large else (768, 12, 12, 0.1)
    )
    assert 'global_blocks' not in bb  # the backbone's default: 4 evenly spaced
    size = 'large' if large else 'base'
    assert bb.pretrained == f'https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_{size}.pth'
    assert cfg.model.data_preprocessor.pad_size_divisor == 1024  # square padding to 1024
    neck = cfg.model.neck
    assert (neck.type, neck.in_channels, neck.out_channels, neck.num_outs) == (
        'MAEDenseSimpleFPN',
        bb.embed_dim,
        256,
        5,
    )
    assert tuple(neck.scale_factors) == (4.0, 2.0, 1.0, 0.5)
    assert cfg.model.rpn_head.num_convs == 2
    assert list(cfg.model.rpn_head.anchor_generator.strides) == [4, 8, 16, 32, 64]
    bbox, mask = cfg.model.roi_head.bbox_head, cfg.model.roi_head.mask_head
    assert (bbox.type, bbox.conv_out_channels, bbox.fc_out_channels, bbox.num_classes) == (
        'Shared4Conv1FCBBoxHead',
        256,
        1024,
        80,
    )
    assert (mask.type, mask.num_convs, mask.num_classes) == ('FCNMaskHead', 4, 80)
    assert bbox.norm_cfg == mask.norm_cfg == dict(type='LN2d', eps=1e-6, requires_grad=True)

    train = cfg.train_dataloader
    steps = [t['type'] for t in train.dataset.pipeline]
    assert steps == [
        'LoadImageFromFile',
        'LoadAnnotations',
        'RandomFlip',
        'RandomResize',
        'RandomCrop',
        'FilterAnnotations',
        'PackDetInputs',
    ]
    resize, crop = train.dataset.pipeline[3], train.dataset.pipeline[4]
    assert (tuple(resize.scale), tuple(resize.ratio_range), resize.keep_ratio) == (
        (1024, 1024),
        (0.1, 2.0),
        True,
    )
    assert (crop.crop_type, tuple(crop.crop_size)) == ('absolute_range', (1024, 1024))
    assert train.batch_size == 4  # x 16 GPUs = 64
    assert train.dataset.type == cfg.test_dataloader.dataset.type == 'CheckedCocoDataset'
    # ours: mmdet's CocoMetric, no detection at all scores 0.0 (test_data_coco.py)
    assert cfg.test_evaluator.type == 'CocoMetricScoringNoDetections'
    assert cfg.test_evaluator.metric == ['bbox', 'segm']

    ow = cfg.optim_wrapper
    assert ow.type == 'AmpOptimWrapper' and ow.loss_scale == 'dynamic' and 'fp16' not in cfg
    # the project's Runner and crash-safe checkpoint hook, named as theirs (nothing of mmengine's replaced)
    assert (cfg.runner_type, cfg.default_hooks.checkpoint.type) == (
        'MAEDenseRunner',
        'CrashSafeCheckpointHook',
    )
    assert (ow.optimizer.type, ow.optimizer.lr, ow.optimizer.weight_decay, tuple(ow.optimizer.betas)) == (
        'AdamW',
        1e-4,
        0.1,
        (0.9, 0.999),
    )
    assert ow.constructor == 'ViTLayerDecayOptimizerConstructor'
    assert ow.paramwise_cfg == dict(
        num_layers=bb.depth, layer_decay_rate=0.8 if large else 0.7, wd_policy='vitdet'
    )
    warm, steps = cfg.param_scheduler
    assert (warm.type, warm.start_factor, warm.end, warm.by_epoch) == ('LinearLR', 0.001, 251, False)
    assert (steps.type, steps.milestones, steps.gamma, steps.by_epoch) == (
        'MultiStepLR',
        [163889, 177546],
        0.1,
        False,
    )
    # mmengine's iteration loop, resuming exactly (RNG states in the checkpoints)
    assert cfg.train_cfg.type == 'ExactResumeIterBasedTrainLoop' and cfg.train_cfg.max_iters == 184375
    assert 184375 * 64 / 118000 == 100.0  # epochs
    assert cfg.custom_hooks == [dict(type='Fp16CompressionHook'), dict(type='RandomStateHook')]


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_builds_and_runs_one_train_step(path):
    from mmengine.optim import build_optim_wrapper

    from mae_dense.openmmlab.engine.fallbacks import cpu_fallback_cfg

    cfg = cpu_fallback_cfg(_load(path))  # as the tools' Runner builds it without CUDA
    cfg.model.data_preprocessor.pad_size_divisor = 128  # reduced input size: the ViT takes any size
    cfg.model.train_cfg.rcnn.sampler.num = 64  # fewer sampled RoIs (512): the heads dominate on CPU
    torch.manual_seed(0)
    model = _build(cfg)
    model.init_weights()
    assert len(model.backbone.blocks) == cfg.model.backbone.depth
    assert model.backbone.global_blocks == ((5, 11, 17, 23) if '-l-' in path.name else (2, 5, 8, 11))
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = model.backbone.blocks[0].attn.qkv.weight.detach().clone()
    log = model.train_step(det_batch(n=1, size=128), wrapper)  # 8x8 tokens: windows pad them to 14x14
    assert {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask'} <= set(log)
    assert torch.isfinite(sum(v for k, v in log.items() if 'loss' in k))
    assert not torch.equal(before, model.backbone.blocks[0].attn.qkv.weight)
    lr0 = wrapper.optimizer.param_groups[0]['lr']  # layer 0: the embeddings, lr x rate^(L+1)
    rate, depth = cfg.optim_wrapper.paramwise_cfg.layer_decay_rate, cfg.model.backbone.depth
    assert lr0 == pytest.approx(cfg.optim_wrapper.optimizer.lr * rate ** (depth + 1))


# ------------------------------------------------------------------------------------- checkpoint layouts
SMALL = dict(embed_dim=64, depth=4, num_heads=4)


def _official(tmp: Path) -> tuple[Path, dict]:
    sd = randomize_(VisionTransformer(mode='mae', img_size=224, **SMALL), seed=1).state_dict()
    torch.save({'model': sd}, tmp / 'mae_pretrain_vit_small.pth')
    return tmp / 'mae_pretrain_vit_small.pth', sd


def _ours(tmp: Path) -> tuple[Path, dict]:
    mae = randomize_(
        MaskedAutoencoder(decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2, **SMALL), 2
    )
    torch.save({'state_dict': mae.state_dict(), 'meta': {'iter': 100}}, tmp / 'iter_100.pth')
    return tmp / 'iter_100.pth', {k[len('backbone.') :]: v for k, v in mae.state_dict().items()}


def _vitdet_backbone(seed: int) -> dict:
    vit = VisionTransformer(mode='det', img_size=1024, global_blocks=(1, 3), **SMALL)
    return randomize_(vit, seed).state_dict()


def _detectron2(tmp: Path) -> tuple[Path, dict]:
    sd = _vitdet_backbone(3)
    model = {f'backbone.net.{k}': v.numpy() for k, v in sd.items()}
    model['backbone.simfp_2.0.weight'] = np.zeros((64, 32, 2, 2), np.float32)
    model['roi_heads.box_predictor.cls_score.weight'] = np.zeros((81, 1024), np.float32)
    with open(tmp / 'model_final_61ccd1.pkl', 'wb') as f:
        pickle.dump({'model': model, '__author__': 'Detectron2 Model Zoo'}, f)
    return tmp / 'model_final_61ccd1.pkl', sd


def _mmdet(tmp: Path) -> tuple[Path, dict]:
    sd = _vitdet_backbone(4)
    full = {f'backbone.{k}': v for k, v in sd.items()}
    full['neck.lateral_convs.0.conv.weight'] = torch.zeros(256, 64, 1, 1)
    torch.save({'state_dict': full, 'meta': {'dataset_meta': {'classes': ('a',)}}}, tmp / 'vitdet_mmdet.pth')
    return tmp / 'vitdet_mmdet.pth', sd


@pytest.mark.parametrize('layout', [_official, _ours, _detectron2, _mmdet], ids=lambda f: f.__name__[1:])
def test_config_pretrained_loads_every_layout(layout, tmp_path):
    path, sd = layout(tmp_path)
    cfg = _load(BASE, pretrained=str(path))
    cfg.model.backbone.update(global_blocks=(1, 3), **SMALL)  # a small ViT: the files stay small
    cfg.model.neck.in_channels = SMALL['embed_dim']
    model = _build(cfg)
    model.init_weights()
    own = model.backbone.state_dict()
    for name in ('patch_embed.proj.weight', 'blocks.3.attn.qkv.weight', 'blocks.1.mlp.fc2.bias'):
        torch.testing.assert_close(own[name], sd[name], msg=name)
    # the 224 checkpoint's table (with its cls row) is kept; det mode resizes it to the grid at run time
    torch.testing.assert_close(own['pos_embed'], sd['pos_embed'])
    if layout in (_detectron2, _mmdet):  # ViTDet files bring their relative position tables
        torch.testing.assert_close(own['blocks.1.attn.rel_pos_h'], sd['blocks.1.attn.rel_pos_h'])
    else:  # MAE files do not: zero-initialised, as in ViTDet
        assert not own['blocks.1.attn.rel_pos_h'].any()
