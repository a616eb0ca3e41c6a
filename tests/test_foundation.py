"""Foundation: compiled mmcv ops, import hygiene, registration, loading policy in mmengine, CPU fallbacks."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import seg_batch

ROOT = Path(__file__).resolve().parents[1]


def test_mmcv_ops_smoke():
    import mmcv
    import mmcv._ext  # noqa: F401
    from mmcv.ops import RoIAlign, batched_nms

    assert mmcv.__version__ == '2.1.0'
    feats = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = RoIAlign((1, 1), spatial_scale=1.0, sampling_ratio=1, aligned=False)(
        feats, torch.tensor([[0, 0.0, 0.0, 2.0, 2.0]])
    )
    # one sample at the box centre (1, 1): bilinear value of the map there = 5.0
    assert out.item() == pytest.approx(5.0)
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]], dtype=torch.float32)
    _, keep = batched_nms(
        boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 1]), dict(type='nms', iou_threshold=0.5)
    )
    assert keep.tolist() == [0, 2]  # box 1 overlaps box 0 in the same class; box 2 is another class


def test_import_mae_dense_imports_no_openmmlab():
    code = (
        'import sys, mae_dense, mae_dense.models, mae_dense.checkpoint, mae_dense.layers, mae_dense.optim.layer_decay;'
        'bad = sorted(m for m in sys.modules if m.split(".")[0] in ("mmengine", "mmseg", "mmdet", "mmcv"));'
        'print(bad); sys.exit(1 if bad else 0)'
    )
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_version_in_one_place():
    import mae_dense

    text = (ROOT / 'pyproject.toml').read_text()
    assert 'dynamic = ["version"]' in text and 'mae_dense.__version__' in text
    assert mae_dense.__version__.count('.') == 2


@pytest.mark.parametrize('task', ['pretrain', 'segmentation', 'detection'])
def test_custom_imports_registers_everything(tmp_path, task):
    imports = ['mae_dense.openmmlab'] + ([f'mae_dense.openmmlab.{task}'] if task != 'pretrain' else [])
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(
        textwrap.dedent(f"""
        custom_imports = dict(imports={imports!r}, allow_failed_imports=False)
        backbone = dict(type='MAEDenseViT', mode='seg', img_size=32, embed_dim=64, depth=2, num_heads=4,
                        patch_size=8, out_indices=[0, 1])
    """)
    )
    code = textwrap.dedent(f"""
        import sys
        from mmengine.config import Config
        cfg = Config.fromfile({str(cfg)!r})
        loaded = sorted({{m.split('.')[0] for m in sys.modules}} & {{'mmseg', 'mmdet', 'pycocotools'}})
        # a pretraining run loads neither mmseg nor mmdet; a segmentation run no pycocotools of ours
        # (mmseg's own Mask2Former heads import mmdet when it is installed)
        expect = dict(pretrain=[], segmentation=['mmseg'], detection=['mmdet', 'pycocotools'])[{task!r}]
        assert set(expect) <= set(loaded) and (loaded == [] if {task!r} == 'pretrain' else True), loaded
        from mmengine.registry import OPTIM_WRAPPERS, OPTIM_WRAPPER_CONSTRUCTORS as C, MODELS as E
        from mmengine.runner.checkpoint import CheckpointLoader
        registries = [E]
        if {task!r} == 'segmentation':
            from mmseg.registry import MODELS as S
            registries.append(S)
        if {task!r} == 'detection':
            from mmdet.registry import MODELS as D
            registries.append(D)
        for reg in registries:
            m = reg.build(cfg.backbone)
            assert type(m).__name__ == 'VisionTransformer', type(m)
        assert E.get('MAEPretrainer') is not None
        assert C.get('ViTLayerDecayOptimizerConstructor') is not None
        assert OPTIM_WRAPPERS.get('AmpOptimWrapper').__name__ == 'AmpOptimWrapperWithCpuFallback'
        assert E.get('SyncBN').__name__ == 'SyncBNWithCpuFallback'
        assert CheckpointLoader._get_checkpoint_loader('x.pth').__module__ == 'mae_dense.openmmlab.loading'
        assert CheckpointLoader._get_checkpoint_loader('https://a/b.pth').__module__ == 'mae_dense.openmmlab.loading'
        print('ok')
    """)
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip().endswith('ok'), r.stdout + r.stderr


def test_mmengine_loading_goes_through_the_policy(tmp_path):
    from mmengine.logging import MessageHub
    from mmengine.runner.checkpoint import _load_checkpoint, load_checkpoint

    import mae_dense.openmmlab  # noqa: F401
    from mae_dense.checkpoint import CheckpointError

    hub = MessageHub.get_instance('policy_test')
    hub.update_scalar('train/loss', 1.0)
    model = torch.nn.Linear(2, 2)
    ckpt = {'meta': {'iter': np.int64(5)}, 'state_dict': model.state_dict(), 'message_hub': hub.state_dict()}
    torch.save(ckpt, tmp_path / 'iter_5.pth')
    assert _load_checkpoint(str(tmp_path / 'iter_5.pth'))['meta']['iter'] == 5
    load_checkpoint(torch.nn.Linear(2, 2), str(tmp_path / 'iter_5.pth'), strict=True)

    class Evil:
        def __reduce__(self):
            return (subprocess.call, (['true'],))

    torch.save({'state_dict': model.state_dict(), 'x': Evil()}, tmp_path / 'evil.pth')
    with pytest.raises(CheckpointError, match='subprocess.call'):
        load_checkpoint(torch.nn.Linear(2, 2), str(tmp_path / 'evil.pth'))


@pytest.mark.parametrize('dtype', [None, 'bfloat16'])
def test_amp_and_syncbn_config_runs_one_step_on_cpu(dtype):
    from mmengine.optim import build_optim_wrapper
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    import mae_dense.openmmlab  # noqa: F401

    register_all_modules()
    norm = dict(type='SyncBN', requires_grad=True)
    model = MODELS.build(
        dict(
            type='EncoderDecoder',
            data_preprocessor=dict(
                type='SegDataPreProcessor',
                mean=[123.675, 116.28, 103.53],
                std=[58.395, 57.12, 57.375],
                bgr_to_rgb=True,
                size=(32, 32),
                pad_val=0,
                seg_pad_val=255,
            ),
            backbone=dict(
                type='MAEDenseViT',
                mode='seg',
                img_size=32,
                embed_dim=64,
                depth=4,
                num_heads=4,
                patch_size=8,
                out_indices=[0, 1, 2, 3],
                init_values=1.0,
            ),
            neck=dict(type='Feature2Pyramid', embed_dim=64, rescales=[4, 2, 1, 0.5], norm_cfg=norm),
            decode_head=dict(
                type='UPerHead',
                in_channels=[64] * 4,
                in_index=[0, 1, 2, 3],
                channels=32,
                num_classes=5,
                norm_cfg=norm,
                loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0),
            ),
        )
    )
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    wrapper = build_optim_wrapper(
        model,
        dict(
            type='AmpOptimWrapper',
            loss_scale='dynamic',
            dtype=dtype,
            optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
        ),
    )
    assert wrapper.cpu_fallback and wrapper.cast_dtype == (torch.bfloat16 if dtype else None)
    before = model.backbone.blocks[0].attn.qkv.weight.detach().clone()
    log = model.train_step(seg_batch(), wrapper)
    assert torch.isfinite(log['loss']) if 'loss' in log else all(torch.isfinite(v) for v in log.values())
    assert not torch.equal(before, model.backbone.blocks[0].attn.qkv.weight)
    state = wrapper.state_dict()
    state['loss_scaler'] = {'scale': 65536.0}  # a GPU checkpoint resumes on CPU
    wrapper.load_state_dict(state)


def test_fp32_override_trains_without_autocast_or_loss_scaler():
    """`--cfg-options optim_wrapper.dtype=float32`: the documented way to train in fp32 like mmseg 0.x."""
    from mmengine.optim import build_optim_wrapper

    import mae_dense.openmmlab  # noqa: F401

    model = torch.nn.Linear(4, 2)
    cfg = dict(
        type='AmpOptimWrapper', loss_scale='dynamic', dtype='float32', optimizer=dict(type='AdamW', lr=1e-3)
    )
    wrapper = build_optim_wrapper(model, cfg)
    assert (
        wrapper.plain
        and not wrapper.cpu_fallback
        and wrapper.loss_scaler is None
        and wrapper.cast_dtype is None
    )
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with wrapper.optim_context(model):
        loss = model(torch.randn(3, 4)).square().mean()
    wrapper.update_params(loss)
    assert seen == [torch.float32] and 'loss_scaler' not in wrapper.state_dict()
