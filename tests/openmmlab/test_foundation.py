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

ROOT = Path(__file__).resolve().parents[2]


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
    imports = ['mae_dense.openmmlab', f'mae_dense.openmmlab.{task}']  # the core and the task's module
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
        assert (E.get('MAEPretrainer') is not None) == ({task!r} == 'pretrain')
        assert C.get('ViTLayerDecayOptimizerConstructor') is not None
        # the AMP fallback, under its own name (the frameworks' names: the test below)
        assert OPTIM_WRAPPERS.get('AmpOptimWrapperWithCpuFallback') is not None
        print('ok')
    """)
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip().endswith('ok'), r.stdout + r.stderr


def test_importing_ours_replaces_nothing_of_the_frameworks(tmp_path):
    """Every name mmengine, mmcv, mmseg and mmdet register keeps their class once all of ours is imported and
    a plain Runner is built from a config that does not opt in: its checkpoint hook is mmengine's, and so
    are the file backend of local paths and the checkpoint loaders."""
    config = tmp_path / 'plain.py'
    config.write_text(
        textwrap.dedent(f"""
        _base_ = 'mmdet::_base_/default_runtime.py'
        custom_imports = dict(imports=['mae_dense.openmmlab'], allow_failed_imports=False)
        model = dict(type='MAEDenseViT', mode='det', img_size=32, embed_dim=64, depth=2, num_heads=4,
                     patch_size=8)
        work_dir = {str(tmp_path / 'work')!r}
    """)
    )
    code = textwrap.dedent(f"""
        import importlib, pkgutil
        import mmcv.cnn, mmcv.ops, mmcv.transforms, mmengine.runner, mmengine.visualization
        import mmdet.registry, mmseg.registry
        from mmdet.evaluation import CocoMetric
        from mmdet.utils import register_all_modules as all_of_mmdet
        from mmengine import registry as engine
        from mmengine.config import Config
        from mmengine.fileio import LocalBackend, get_file_backend
        from mmengine.hooks import CheckpointHook
        from mmengine.optim import AmpOptimWrapper
        from mmengine.registry import Registry
        from mmengine.runner import Runner, checkpoint
        from mmengine.utils.dl_utils.parrots_wrapper import SyncBatchNorm  # mmcv's SyncBN: torch's, checked
        from mmseg.utils import register_all_modules as all_of_mmseg

        all_of_mmseg(init_default_scope=False)
        all_of_mmdet(init_default_scope=False)
        scopes = (engine, mmseg.registry, mmdet.registry)
        registries = {{(m.__name__, k): r for m in scopes for k, r in vars(m).items() if isinstance(r, Registry)}}
        before = {{key: dict(r._module_dict) for key, r in registries.items()}}
        theirs = {{}}  # registry kind ('hook', 'model', ...) -> every name the frameworks give in one of its scopes
        for key, names in before.items():
            theirs.setdefault(registries[key].name, set()).update(names)

        import mae_dense.openmmlab as ours
        for module in pkgutil.iter_modules(ours.__path__):
            importlib.import_module(f'mae_dense.openmmlab.{{module.name}}')
        for key, r in registries.items():
            for name, cls in r._module_dict.items():
                assert before[key].get(name, cls) is cls, ('replaced', key, name, cls)
                assert name in before[key] or name not in theirs[r.name], ('shadowed', key, name, cls)
        for scope in scopes:
            assert type(scope.HOOKS.build(dict(type='CheckpointHook', interval=1))) is CheckpointHook
            assert scope.OPTIM_WRAPPERS.get('AmpOptimWrapper') is AmpOptimWrapper
            assert type(scope.MODELS.build(dict(type='SyncBN', num_features=4))) is SyncBatchNorm
        assert type(mmdet.registry.METRICS.build(dict(type='CocoMetric'))) is CocoMetric

        def untouched():
            assert type(get_file_backend('/any/local/path')) is LocalBackend
            loader = checkpoint.CheckpointLoader._get_checkpoint_loader
            assert loader('x.pth') is checkpoint.load_from_local
            assert loader('https://a/b.pth') is checkpoint.load_from_http

        untouched()
        runner = Runner.from_cfg(Config.fromfile({str(config)!r}))
        hooks = [h for h in runner.hooks if isinstance(h, CheckpointHook)]
        assert len(hooks) == 1 and type(hooks[0]) is CheckpointHook, hooks
        untouched()
        print('ok')
    """)
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip().endswith('ok'), r.stdout + r.stderr


def test_a_config_opts_in_by_naming_our_runner_and_checkpoint_hook(tmp_path, monkeypatch):
    """``runner_type='MAEDenseRunner'`` and ``CrashSafeCheckpointHook`` (as the shipped configs name them):
    the hook makes local writes atomic when the run starts, the Runner also installs the loading policy.
    (What they do: test_resume.py, test_crash_resume.py and the policy test below.)"""
    from collections import OrderedDict

    from mmengine.config import Config
    from mmengine.fileio import LocalBackend, get_file_backend
    from mmengine.fileio.backends import registry_utils
    from mmengine.hooks import CheckpointHook
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner, checkpoint

    from mae_dense.openmmlab.engine.checkpointing import AtomicLocalBackend, CrashSafeCheckpointHook
    from mae_dense.openmmlab.engine.runner import MAEDenseRunner

    # mmengine's own backend and loaders, whatever an earlier test of this process installed
    monkeypatch.setitem(registry_utils.backends, 'local', LocalBackend)
    monkeypatch.setitem(registry_utils.prefix_to_backends, '', LocalBackend)
    schemes = dict(checkpoint.CheckpointLoader._schemes, **{'': checkpoint.load_from_local})
    monkeypatch.setattr(checkpoint.CheckpointLoader, '_schemes', OrderedDict(sorted(schemes.items())[::-1]))
    loader = checkpoint.CheckpointLoader._get_checkpoint_loader

    def config(name: str) -> Config:
        cfg = Config.fromfile(str(ROOT / 'configs/coco/mask-rcnn_vit-b-mae_lsj-100e_coco.py'))
        cfg.merge_from_dict(dict(work_dir=str(tmp_path), experiment_name=f'{tmp_path.name}-{name}'))
        cfg.model = dict(type='MAEDenseViT', mode='det', img_size=32, embed_dim=64, depth=2, num_heads=4,
                         patch_size=8)  # fmt: skip
        cfg.train_dataloader = cfg.train_cfg = cfg.optim_wrapper = cfg.param_scheduler = None
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
        cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
        return cfg

    # the hook alone, on mmengine's Runner: atomic writes from the start of the run
    runner = Runner.from_cfg(config('hook'))
    assert [type(h) for h in runner.hooks if isinstance(h, CheckpointHook)] == [CrashSafeCheckpointHook]
    assert type(get_file_backend(str(tmp_path))) is LocalBackend
    runner.call_hook('before_run')
    assert type(get_file_backend(str(tmp_path))) is AtomicLocalBackend
    assert loader('x.pth') is checkpoint.load_from_local

    # the Runner, built as mmdet's and mmseg's tools build a config's runner_type: the loading policy too
    monkeypatch.setitem(registry_utils.prefix_to_backends, '', LocalBackend)
    cfg = config('runner')
    assert cfg.runner_type == 'MAEDenseRunner'
    runner = RUNNERS.build(cfg)
    assert type(runner) is MAEDenseRunner
    assert type(get_file_backend(str(tmp_path))) is AtomicLocalBackend
    assert (
        loader('x.pth').__module__
        == loader('https://a/b.pth').__module__
        == 'mae_dense.openmmlab.engine.loading'
    )


def test_mmengine_loading_goes_through_the_policy(tmp_path):
    from mmengine.logging import MessageHub
    from mmengine.runner.checkpoint import _load_checkpoint, load_checkpoint

    from mae_dense.checkpoint import CheckpointError
    from mae_dense.openmmlab.engine.runner import MAEDenseRunner

    MAEDenseRunner(model=torch.nn.Linear(2, 2), work_dir=str(tmp_path / 'work'))  # installs the policy

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
    """What MAEDenseRunner (the tools' Runner) builds from AmpOptimWrapper and SyncBN without CUDA."""
    from mmengine.optim import build_optim_wrapper
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from mae_dense.openmmlab.engine.fallbacks import cpu_fallback_cfg, cpu_fallback_model

    register_all_modules()
    norm = dict(type='SyncBN', requires_grad=True)
    cfg = dict(
        model=dict(
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
        ),
        optim_wrapper=dict(
            type='AmpOptimWrapper',
            loss_scale='dynamic',
            dtype=dtype,
            optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
        ),
    )
    cpu_fallback_cfg(cfg)  # MAEDenseRunner.from_cfg: mmengine's AmpOptimWrapper needs an accelerator
    assert cfg['optim_wrapper']['type'] == 'AmpOptimWrapperWithCpuFallback'
    model = MODELS.build(cfg['model'])
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())  # mmcv's SyncBN
    params = dict(model.named_parameters())
    model = cpu_fallback_model(model)  # MAEDenseRunner.build_model: DDP refuses SyncBatchNorm on CPU
    after = dict(model.named_parameters())
    assert after.keys() == params.keys() and all(after[n] is params[n] for n in params)  # the same tensors
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    wrapper = build_optim_wrapper(model, cfg['optim_wrapper'])
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

    from mae_dense.openmmlab.engine.fallbacks import cpu_fallback_cfg

    model = torch.nn.Linear(4, 2)
    cfg = dict(
        type='AmpOptimWrapper', loss_scale='dynamic', dtype='float32', optimizer=dict(type='AdamW', lr=1e-3)
    )
    wrapper = build_optim_wrapper(model, cpu_fallback_cfg(dict(optim_wrapper=cfg))['optim_wrapper'])
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
