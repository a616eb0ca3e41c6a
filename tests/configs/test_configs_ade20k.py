"""Every ADE20K config builds its full-size model and runs one training step at reduced input size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import seg_batch

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / 'configs' / 'ade20k').glob('upernet_*.py'))  # the probes: test_probe.py


def _load(path):
    from mmengine.config import Config

    cfg = Config.fromfile(str(path))
    cfg.model.pretrained = None  # no download here; loading is tested with real layouts elsewhere
    return cfg


def test_there_are_the_seed_configs():
    names = {p.name for p in CONFIGS}
    assert {
        'upernet_mae-base_fp16_8x2_512x512_160k_ade20k.py',
        'upernet_mae-base_fp16_512x512_160k_ade20k_ms.py',
        'upernet_mae-large_fp16_8x2_512x512_160k_ade20k.py',
        'upernet_mae-large_fp16_512x512_160k_ade20k_ms.py',
    } <= names


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_recipe_values(path):
    cfg = _load(path)
    large = 'large' in path.name
    bb = cfg.model.backbone
    assert (bb.type, bb.mode, bb.img_size, bb.patch_size, bb.drop_path_rate, bb.init_values) == (
        'MAEDenseViT',
        'seg',
        512,
        16,
        0.1,
        1.0,
    )
    assert bb.embed_dim == (1024 if large else 768) and bb.depth == (24 if large else 12)
    assert cfg.model.neck.rescales == [4, 2, 1, 0.5]
    assert cfg.model.decode_head.type == 'UPerHead' and cfg.model.decode_head.num_classes == 150
    assert cfg.model.auxiliary_head.loss_decode.loss_weight == 0.4
    ow = cfg.optim_wrapper
    assert ow.type == 'AmpOptimWrapper' and ow.loss_scale == 'dynamic' and 'fp16' not in cfg
    # the project's Runner and crash-safe checkpoint hook, named as theirs (nothing of mmengine's replaced)
    assert (cfg.runner_type, cfg.default_hooks.checkpoint.type) == (
        'MAEDenseRunner',
        'CrashSafeCheckpointHook',
    )
    assert (ow.optimizer.lr, ow.optimizer.weight_decay, ow.paramwise_cfg.layer_decay_rate) == (
        1e-4,
        0.05,
        0.65,
    )
    assert ow.paramwise_cfg.wd_policy == 'mmseg'  # the published run's groups, by default
    warm, poly = cfg.param_scheduler
    assert (warm.start_factor, warm.end, poly.begin, poly.end, poly.power, poly.eta_min) == (
        1e-6,
        1501,  # mmengine reaches `end - 1`: the factor is 1 at iteration 1500, as 0.x's warm-up
        0,  # 0.x: the poly decay runs from iteration 0 and the warm-up multiplies it
        160001,
        1.0,
        0.0,
    )
    assert cfg.train_cfg.max_iters == 160000 and cfg.train_dataloader.batch_size == 2  # x 8 GPUs = 16
    tc = cfg.model.test_cfg
    assert (tc.mode, tuple(tc.crop_size), tuple(tc.stride)) == ('slide', (512, 512), (341, 341))
    if path.stem.endswith('_ms'):
        assert tc.aug.ratios == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75] and tc.aug.min_size == 512 and tc.aug.flip
        assert [t['type'] for t in cfg.test_dataloader.dataset.pipeline] == [
            'LoadImageFromFile',
            'LoadAnnotations',
            'PackSegInputs',
        ]
    else:
        assert 'aug' not in tc


def test_schedule_is_mmseg_0x_poly_times_linear_warmup():
    from mmengine.optim.scheduler import LinearLR, PolyLR

    cfg = _load(ROOT / 'configs/ade20k/upernet_mae-base_fp16_8x2_512x512_160k_ade20k.py')
    base, total, warmup, ratio = cfg.optim_wrapper.optimizer.lr, 160000, 1500, 1e-6
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base)
    kinds = dict(LinearLR=LinearLR, PolyLR=PolyLR)
    schedulers = [kinds[s.pop('type')](opt, **s) for s in (dict(s) for s in cfg.param_scheduler)]
    for t in range(total):
        # mmcv 0.x (runner/hooks/lr_updater.py): PolyLrUpdaterHook.get_lr, then get_warmup_lr('linear')
        regular = base * (1 - t / total) ** 1.0
        if t < warmup:
            k = (1 - t / warmup) * (1 - ratio)
            expect = regular * (1 - k)
        else:
            expect = regular
        if t < 3000 or t % 997 == 0 or t > total - 3:
            assert opt.param_groups[0]['lr'] == pytest.approx(expect, rel=1e-6, abs=1e-15), t
        for s in schedulers:
            s.step()


def test_published_configs_build_mmsegs_optimizer_groups():
    """The ADE20K config with mmseg's published name builds mmseg's own layer-decay groups by default."""
    import mmseg
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    import mae_dense.openmmlab.segmentation  # noqa: F401
    from mae_dense.checkpoint.layouts import canonical_to_mm
    from mae_dense.openmmlab.engine.fallbacks import cpu_fallback_cfg

    register_all_modules(init_default_scope=True)
    # both AmpOptimWrapper configs as the tools' Runner builds them without CUDA
    ours_cfg = cpu_fallback_cfg(
        _load(ROOT / 'configs/ade20k/upernet_mae-base_fp16_8x2_512x512_160k_ade20k.py')
    )
    mim = Path(mmseg.__file__).parent / '.mim/configs/mae'
    ref_cfg = cpu_fallback_cfg(Config.fromfile(str(mim / 'mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py')))
    ref_cfg.model.pretrained = None
    ours, ref = MODELS.build(ours_cfg.model), MODELS.build(ref_cfg.model)
    ours_groups = build_optim_wrapper(ours, ours_cfg.optim_wrapper).optimizer.param_groups
    ref_groups = build_optim_wrapper(ref, ref_cfg.optim_wrapper).optimizer.param_groups

    def by_name(model, groups, rename=lambda n: n):
        ids = {id(p): n for n, p in model.named_parameters()}
        return {rename(ids[id(p)]): (g['lr'], g['weight_decay']) for g in groups for p in g['params']}

    def mm(name: str) -> str:
        return 'backbone.' + canonical_to_mm(name[9:]) if name.startswith('backbone.') else name

    got, expect = by_name(ours, ours_groups, mm), by_name(ref, ref_groups)
    assert set(got) == set(expect) and len(got) > 200
    for name, (lr, wd) in expect.items():
        assert got[name][0] == pytest.approx(lr) and got[name][1] == wd, name
    assert got['backbone.pos_embed'][1] == got['backbone.cls_token'][1] == 0.05  # decayed, as in 0.x


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_builds_and_runs_one_train_step(path):
    if 'large' in path.name and '_ms' in path.name:
        pytest.skip('same model as the ViT-L single-scale config')
    from mmengine.optim import build_optim_wrapper
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    import mae_dense.openmmlab.segmentation  # noqa: F401
    from mae_dense.openmmlab.engine.fallbacks import cpu_fallback_cfg

    register_all_modules(init_default_scope=True)  # an earlier Runner may have left another scope
    cfg = cpu_fallback_cfg(_load(path))  # as the tools' Runner builds it without CUDA
    cfg.model.data_preprocessor.size = (64, 64)  # reduced input size: the ViT takes any size
    model = MODELS.build(cfg.model)
    model.init_weights()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = model.backbone.blocks[0].attn.qkv.weight.detach().clone()
    log = model.train_step(seg_batch(n=2, size=64, classes=150), wrapper)
    assert torch.isfinite(sum(v for k, v in log.items() if 'loss' in k))
    assert not torch.equal(before, model.backbone.blocks[0].attn.qkv.weight)
    # one AdamW step on a decayed layer: |update| <= lr * scale (+ wd term), so the layer decay is live
    lr0 = wrapper.optimizer.param_groups[0]['lr']
    assert lr0 < cfg.optim_wrapper.optimizer.lr
