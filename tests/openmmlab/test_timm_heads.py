"""A timm backbone in every task head, through the suite's own placement of a backbone entry into the shipped
(demo) configs: UperNet and Mask R-CNN train a step with the layer decay on timm's own block index; both
probe modes (cached features and augmented) train and test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import seg_batch

from mae_dense.models.timm_backbone import TimmViT
from mae_dense.suite.outputs import options_argv
from mae_dense.suite.recipe import RunConfig
from mae_dense.suite.tasks import TASKS, placement_fit

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    'ade20k': 'configs/demo/upernet_vit-tiny_synthetic_ade20k.py',
    'coco': 'configs/demo/mask-rcnn_vit-tiny_synthetic_coco.py',
    'probe': 'configs/demo/linear-probe_vit-tiny_synthetic_ade20k.py',
}
NAME, TINY = 'vit_small_patch14_reg4_dinov2', dict(embed_dim=48, depth=4, num_heads=3, img_size=56)


def _fitted(task: str, **options) -> RunConfig:
    """The demo config of ``task`` as the suite runs it for a ``{timm: NAME, timm_kwargs: TINY}`` entry."""
    return RunConfig.read(
        str(ROOT / CONFIGS[task]), options, fit=placement_fit(TASKS[task], None, NAME, TINY)
    )


def _decay_groups(wrapper) -> dict[int, float]:
    return {g['layer_id']: g['lr_scale'] for g in wrapper.optimizer.param_groups}


def _train_one_step(model, cfg, batch) -> None:
    from mmengine.optim import build_optim_wrapper

    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    # the one decay rule reads timm's own block index under backbone.model.: ids 0 (embeddings) .. 5 (heads)
    assert sorted(_decay_groups(wrapper)) == [0, 1, 2, 3, 4, 5]
    assert _decay_groups(wrapper)[3] == pytest.approx(0.9**2)
    ids = {id(p): g['layer_id'] for g in wrapper.optimizer.param_groups for p in g['params']}
    assert ids[id(model.backbone.model.blocks[2].attn.qkv.weight)] == 3
    assert ids[id(model.backbone.model.reg_token)] == 0
    # the maps are read without the final norm: it does not train (DDP would find it unused)
    assert (
        id(model.backbone.model.norm.weight) not in ids and not model.backbone.model.norm.weight.requires_grad
    )
    before = model.backbone.model.blocks[3].mlp.fc2.weight.detach().clone()
    log = model.train_step(batch, wrapper)
    assert all(torch.isfinite(v).all() for v in log.values())
    assert not torch.equal(before, model.backbone.model.blocks[3].mlp.fc2.weight)


def test_upernet_takes_four_timm_maps_and_trains_a_step():
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from mae_dense.openmmlab.engine.fallbacks import cpu_fallback_cfg

    register_all_modules(init_default_scope=True)
    run = _fitted('ade20k', **{'model.pretrained': None})
    cfg = cpu_fallback_cfg(run.cfg)
    assert run.model == f'timm {NAME}' and cfg.model.neck.embed_dim == 48
    assert cfg.model.decode_head.in_channels == [48] * 4 and cfg.optim_wrapper.paramwise_cfg.num_layers == 4
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert isinstance(model.backbone, TimmViT) and model.backbone.out_indices == (0, 1, 2, 3)
    _train_one_step(model, cfg, seg_batch(n=2, size=128, classes=150))


def _det_batch(size: int = 128) -> dict:
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(2):
        s = DetDataSample(
            metainfo=dict(img_shape=(size, size), ori_shape=(size, size), scale_factor=(1.0, 1.0))
        )
        masks = np.zeros((2, size, size), dtype=np.uint8)
        masks[0, 10:60, 20:90], masks[1, 70:120, 30:80] = 1, 1
        s.gt_instances = InstanceData(
            bboxes=torch.tensor([[20.0, 10.0, 90.0, 60.0], [30.0, 70.0, 80.0, 120.0]]),
            labels=torch.tensor([0, 2]),
            masks=BitmapMasks(masks, size, size),
        )
        samples.append(s)
    images = [torch.randint(0, 255, (3, size, size), generator=g, dtype=torch.uint8) for _ in range(2)]
    return dict(inputs=images, data_samples=samples)


def test_mask_rcnn_takes_the_last_timm_map_and_trains_a_step():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import mae_dense.openmmlab.detection  # noqa: F401
    from mae_dense.openmmlab.engine.fallbacks import cpu_fallback_cfg

    register_all_modules(init_default_scope=True)
    cfg = cpu_fallback_cfg(_fitted('coco', **{'model.backbone.pretrained': None}).cfg)
    assert (
        cfg.model.neck.in_channels == 48 and cfg.model.backbone.drop_path_rate == 0.0
    )  # the recipe's, carried
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert model.backbone.out_indices == (3,) and len(model.backbone(torch.zeros(1, 3, 128, 128))) == 1
    _train_one_step(model, cfg, _det_batch())


@pytest.mark.slow
def test_both_probe_modes_train_and_test_on_the_frozen_timm_backbone(tmp_path):
    from mae_dense.cli import probe as probe_cli
    from mae_dense.data import generate_synthetic_ade20k

    ade = generate_synthetic_ade20k(tmp_path / 'ADE', num_train=4, num_val=2, seed=4)
    roots = {
        'fast': 'train_dataloader.dataset.crops.dataset.data_root',
        'augmented': 'train_dataloader.dataset.data_root',
    }
    for mode, root in roots.items():
        options = {
            root: str(ade),
            'test_dataloader.dataset.data_root': str(ade),
            'probe_cache_root': str(tmp_path / 'cache'),
            'train_dataloader.batch_size': 2,
            'train_cfg.max_iters': 2,
            'model.pretrained': None,
        }
        run = _fitted('probe', **options)
        assert (
            run.cfg.model.backbone.type == 'MAEDenseFrozenTimmViT'
            and run.cfg.model.decode_head.in_channels == 48
        )
        argv = [str(ROOT / CONFIGS['probe']), '--work-dir', str(tmp_path / mode), '--mode', mode]
        assert probe_cli.main(argv + options_argv(run.options)) == 0
        result = json.loads((tmp_path / mode / 'probe_result.json').read_text())
        assert result['mode'] == mode and result['metrics']['mIoU'] >= 0.0 and result['layers'] == [-1]
    assert len([p for p in (tmp_path / 'cache').iterdir() if p.is_dir()]) == 1  # fast mode: one feature cache


def test_depth_probe_reads_timm_blocks_with_their_cls_token_and_trains_its_head_only():
    """The NYU DPT probe on a timm DINOv2-with-registers backbone, placed by the suite: the frozen backbone
    reads the un-normed blocks and each block's cls token (not a register) as timm's own model gives them,
    and a loss step trains the head only."""
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    import mae_dense.openmmlab.depth  # noqa: F401

    init_default_scope('mmseg')
    config = str(ROOT / 'configs/nyu/dpt-depth_mae-base_nyu.py')
    run = RunConfig.read(
        config, {'model.pretrained': None}, fit=placement_fit(TASKS['depth'], None, NAME, TINY)
    )
    backbone = run.cfg.model.backbone
    assert backbone.type == 'MAEDenseFrozenTimmViT' and backbone.layers == [0, 1, 2, 3]
    assert backbone.norm is False and backbone.cls_token is True
    model_cfg = run.cfg.model.to_dict()
    model_cfg.update(data_preprocessor=None)
    model = MODELS.build(model_cfg)
    model.init_weights()
    model.train()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = model.backbone(x)  # (B, 4 layers x 2C, h, w)
        tokens = model.backbone.model.forward_intermediates(
            model.backbone.fit_patch(x), indices=[0, 1, 2, 3], norm=False, intermediates_only=False,
            return_prefix_tokens=True, output_fmt='NLC',
        )[1]  # fmt: skip
    assert out.shape == (2, 4 * 2 * 48, 4, 6)
    for i, (patches, prefix) in enumerate(tokens):  # prefix: cls then 4 registers
        torch.testing.assert_close(out[:, 96 * i + 48 : 96 * (i + 1), 0, 0], prefix[:, 0])
        torch.testing.assert_close(out[:, 96 * i : 96 * i + 48].flatten(2).transpose(1, 2), patches)
    samples = []
    for d in torch.rand(2, 1, 64, 96) * 5 + 0.5:
        sample = SegDataSample(metainfo=dict(img_shape=(64, 96), pad_shape=(64, 96)))
        sample.set_data(dict(gt_depth_map=PixelData(data=d)))
        samples.append(sample)
    losses = model.loss(x, samples)
    losses['decode.loss_silog'].backward()
    assert torch.isfinite(losses['decode.loss_silog'])
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.decode_head.conv_seg[-1].weight.grad.abs().sum() > 0
