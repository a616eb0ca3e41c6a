"""Frozen-backbone linear probes: the head's arithmetic, the frozen backbone, the fast mode against features
computed on the fly, the feature cache's key, the sweep metric against mmseg's IoUMetric, and the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import randomize_, timm_vit
from helpers import run_tool as _run

import mae_dense.openmmlab  # noqa: F401
import mae_dense.openmmlab.probe  # noqa: F401
from mae_dense.checkpoint import convert_state_dict
from mae_dense.cli import probe as probe_cli
from mae_dense.data import generate_synthetic_ade20k
from mae_dense.data.feature_cache import FeatureCache, FeatureCacheWriter
from mae_dense.models.probe import FrozenViT, LinearProbeHead
from mae_dense.models.vit import VisionTransformer

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / 'configs/demo/linear-probe_vit-tiny_synthetic_ade20k.py')
TINY_VIT = dict(img_size=128, patch_size=16, embed_dim=96, depth=4, num_heads=3)  # the demo's encoder


# ------------------------------------------------------------------------------------------ arithmetic
def _bilinear_matrix(out: int, inp: int) -> torch.Tensor:
    """(out, inp) weights of 1-D linear interpolation with align_corners=False (half-pixel centres)."""
    m = torch.zeros(out, inp, dtype=torch.float64)
    for o in range(out):
        src = max((o + 0.5) * inp / out - 0.5, 0.0)
        i0 = min(int(np.floor(src)), inp - 1)
        i1 = min(i0 + 1, inp - 1)
        frac = src - i0
        m[o, i0] += 1 - frac
        m[o, i1] += frac
    return m


@pytest.mark.parametrize('training', [False, True])
def test_head_is_batchnorm_then_1x1_conv_then_bilinear_upsampling(training):
    head = randomize_(LinearProbeHead(in_channels=12, num_classes=7), seed=1)
    head.bn.running_mean.normal_()
    head.bn.running_var.uniform_(0.5, 2.0)
    head.train(training)
    x = torch.randn(3, 12, 5, 6)
    with torch.no_grad():
        got = head(x, size=(37, 23)).double()
    xd = x.double()
    if training:  # batch statistics, biased variance
        mean, var = xd.mean((0, 2, 3)), xd.var((0, 2, 3), unbiased=False)
    else:
        mean, var = head.bn.running_mean.double(), head.bn.running_var.double()
    bn = (xd - mean[:, None, None]) / torch.sqrt(var[:, None, None] + head.bn.eps)
    bn = bn * head.bn.weight.double()[:, None, None] + head.bn.bias.double()[:, None, None]
    logits = torch.einsum('kc,bchw->bkhw', head.conv.weight.double()[:, :, 0, 0], bn)
    logits = logits + head.conv.bias.double()[:, None, None]
    expect = torch.einsum('yh,bkhw,xw->bkyx', _bilinear_matrix(37, 5), logits, _bilinear_matrix(23, 6))
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)


def test_frozen_vit_features_are_the_normed_last_blocks_and_never_train():
    vit = randomize_(VisionTransformer(mode='mae', **TINY_VIT), seed=2)
    frozen = FrozenViT(layers=(-2, -1), **TINY_VIT)
    frozen.load_state_dict(vit.state_dict())
    frozen.train()
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    x = torch.randn(2, 3, 64, 96)
    out = frozen(x)
    # reference: run the blocks by hand and apply the final norm to each of the last two
    tokens, hw = vit.embed(x)
    maps = []
    for i, blk in enumerate(vit.blocks):
        tokens = blk(tokens, hw)
        if i >= 2:
            t = vit.norm(tokens)[:, 1:]
            maps.append(t.transpose(1, 2).reshape(2, 96, *hw))
    torch.testing.assert_close(out, torch.cat(maps, 1))
    assert out.shape == (2, 192, 4, 6) and not out.requires_grad

    # an independent reference: timm's ViT on the same weights (timm's names through the project's
    # converter), its DINO-style get_intermediate_layers at the native 128x128
    ref = timm_vit(img=TINY_VIT['img_size'], **{k: v for k, v in TINY_VIT.items() if k != 'img_size'})
    ref.load_state_dict(convert_state_dict(vit.state_dict(), 'timm'))  # strict: every tensor placed
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expect = torch.cat(ref.get_intermediate_layers(x, n=2, reshape=True, norm=True), 1)
    out = frozen(x)
    assert out.shape == expect.shape == (2, 192, 8, 8)
    torch.testing.assert_close(out, expect, rtol=1e-5, atol=1e-5)


def test_random_init_is_seeded_and_leaves_the_global_generator_alone():
    a, b = FrozenViT(init_seed=3, **TINY_VIT), FrozenViT(init_seed=3, **TINY_VIT)
    torch.manual_seed(0)
    a.init_weights()
    state = torch.get_rng_state()
    b.init_weights()
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    c = FrozenViT(init_seed=4, **TINY_VIT)
    c.init_weights()
    assert not torch.equal(c.blocks[0].attn.qkv.weight, a.blocks[0].attn.qkv.weight)


# ----------------------------------------------------------------------------------------------- cache
def test_cache_rows_written_by_two_processes_read_back(tmp_path):
    directory = tmp_path / 'key'
    shape = dict(num=5, feature_shape=(3, 2, 2), label_shape=(4, 4), dtype='float16')
    first = FeatureCacheWriter(directory, create=True, **shape)
    second = FeatureCacheWriter(directory, create=False, **shape)  # another rank opens the same files
    feats = np.random.default_rng(0).normal(size=(5, 3, 2, 2)).astype(np.float32)
    labels = np.arange(5 * 16).reshape(5, 4, 4).astype(np.uint8)
    first.write([0, 2, 4], feats[[0, 2, 4]], labels[[0, 2, 4]])
    second.write([1, 3], feats[[1, 3]], labels[[1, 3]])
    second.flush()
    with pytest.raises(Exception, match='no complete feature cache'):
        FeatureCache(directory)  # nothing is readable before the commit
    first.commit(dict(note='x'))
    cache = FeatureCache(directory)
    assert len(cache) == 5 and cache.meta['note'] == 'x' and not (tmp_path / 'key.partial').exists()
    for i in range(5):
        f, lab = cache[i]
        assert f.dtype == np.float16 and np.array_equal(f, feats[i].astype(np.float16))
        assert np.array_equal(lab, labels[i])


def test_cache_lock_excludes_a_second_builder(tmp_path):
    import fcntl

    from mae_dense.data.feature_cache import locked

    with locked(tmp_path / 'key'):
        with open(tmp_path / 'key.lock') as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run waits here
    with open(tmp_path / 'key.lock') as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released


# ------------------------------------------------------------------------------------- runs on disk
@pytest.fixture(scope='module')
def ade(tmp_path_factory):
    return generate_synthetic_ade20k(tmp_path_factory.mktemp('probe') / 'ADE', num_train=6, num_val=2, seed=4)


@pytest.fixture(scope='module')
def mae_checkpoint(tmp_path_factory):
    """A released-MAE-layout file ({'model': encoder}) with non-trivial weights at the config's grid."""
    path = tmp_path_factory.mktemp('ckpt') / 'mae_tiny.pth'
    vit = randomize_(VisionTransformer(mode='mae', **TINY_VIT), seed=5)
    torch.save({'model': vit.state_dict()}, path)
    return path


def _options(root, train_root, *extra):
    """Tiny runs: data roots, batch 2, 4 iterations, seed 0."""
    return [
        f'{train_root}.data_root={root}',
        f'test_dataloader.dataset.data_root={root}',
        'train_dataloader.batch_size=2',
        'train_cfg.max_iters=4',
        'randomness.seed=0',
        *extra,
    ]


FAST_ROOT, AUG_ROOT = 'train_dataloader.dataset.crops.dataset', 'train_dataloader.dataset'


def _probe(config, work_dir, mode, options) -> dict:
    rc = probe_cli.main([str(config), '--work-dir', str(work_dir), '--mode', mode, '--cfg-options', *options])
    assert rc == 0
    return json.loads((Path(work_dir) / 'probe_result.json').read_text())


def _heads(work_dir) -> dict[str, torch.Tensor]:
    state = torch.load(Path(work_dir) / 'iter_4.pth', map_location='cpu', weights_only=False)['state_dict']
    return {k: v for k, v in state.items() if k.startswith('decode_head.')}


def test_training_leaves_the_backbone_bit_identical_in_eval_mode_and_outside_the_optimizer(
    ade, mae_checkpoint, tmp_path
):
    from mmengine.config import Config
    from mmengine.runner import Runner

    cfg = Config.fromfile(DEMO)
    cfg.merge_from_dict(
        {
            'train_dataloader.dataset.data_root': str(ade),
            'train_dataloader.batch_size': 2,
            'train_cfg.max_iters': 3,
            'randomness.seed': 0,
            'model.pretrained': str(mae_checkpoint),
            'model.decode_head.lrs': [1e-2, 1e-1],
        }
    )
    cfg.work_dir = str(tmp_path)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    runner = Runner.from_cfg(cfg)
    model = runner.model
    seen = []
    model.decode_head.probe.heads[0].register_forward_pre_hook(
        lambda *_: seen.append((model.training, model.backbone.training))
    )
    runner.train()
    assert len(seen) == 3 and set(seen) == {(True, False)}  # the runner trains; the backbone stays in eval
    released = torch.load(mae_checkpoint, weights_only=True)['model']
    backbone = model.backbone.state_dict()
    assert set(released) == set(backbone)
    assert all(torch.equal(backbone[k], v) for k, v in released.items())
    assert all(not p.requires_grad and p.grad is None for p in model.backbone.parameters())
    groups = runner.optim_wrapper.optimizer.param_groups
    in_optimizer = {id(p) for g in groups for p in g['params']}
    assert not in_optimizer & {id(p) for p in model.backbone.parameters()}
    assert in_optimizer == {id(p) for p in model.decode_head.parameters()}
    assert [g['initial_lr'] for g in groups] == [1e-2, 1e-1]
    heads = model.decode_head.probe.heads
    assert not torch.equal(heads[0].conv.weight, heads[1].conv.weight)  # trained apart, at their own lr


@pytest.mark.slow
def test_fast_mode_trains_the_same_probe_as_features_on_the_fly(ade, mae_checkpoint, tmp_path):
    """The cached features of the fixed crops give the heads that computing those crops on the fly gives."""
    from mmengine.config import Config

    cfg = Config.fromfile(DEMO)  # the augmented mode fed the fast mode's fixed crops, sweep and schedule
    cfg.model.decode_head.lrs = cfg.fast_mode.model.decode_head.lrs
    cfg.param_scheduler = cfg.fast_mode.param_scheduler
    cfg.train_dataloader.dataset = cfg.fast_mode.train_dataloader.dataset.crops
    cfg.dump(tmp_path / 'on_the_fly.py')
    pretrained = f'model.pretrained={mae_checkpoint}'
    on_the_fly = _probe(
        tmp_path / 'on_the_fly.py',
        tmp_path / 'b',
        'augmented',
        _options(ade, AUG_ROOT + '.dataset', pretrained),
    )
    results = {}
    for dtype in ('float32', 'float16'):
        cache = [
            f'probe_cache_root={tmp_path / "cache"}',
            f'train_dataloader.dataset.dtype={dtype}',
        ]
        results[dtype] = _probe(DEMO, tmp_path / dtype, 'fast', _options(ade, FAST_ROOT, pretrained, *cache))
        assert results[dtype]['cache']['crops'] == 6 and not results[dtype]['cache']['reused']
    expect, exact, half = (_heads(tmp_path / d) for d in ('b', 'float32', 'float16'))
    assert set(expect) == set(exact) == set(half) and len(expect) == 3 * 7  # 3 x (bn: 5 tensors, conv: 2)
    # fp32 cache: the very same numbers; fp16 cache: the features rounded to fp16 (rel. error ~5e-4)
    # move the trained weights by well under 1% (Adam normalises tiny gradient differences per element).
    for k, v in expect.items():
        assert torch.equal(exact[k], v), k
        if v.is_floating_point():
            assert (half[k] - v).norm() <= 1e-2 * v.norm(), k
    assert results['float32']['metrics'] == on_the_fly['metrics']
    assert results['float32']['sweep'] == on_the_fly['sweep']


# ---------------------------------------------------------------------------------------------- configs
PROBE_CONFIGS = sorted((ROOT / 'configs' / 'ade20k').glob('linear-probe_*.py'))


@pytest.mark.parametrize('path', PROBE_CONFIGS, ids=lambda p: p.stem)
def test_probe_configs_state_dinov2_linear_protocol(path):
    from mmengine.config import Config

    assert len(PROBE_CONFIGS) == 4
    cfg = Config.fromfile(str(path))
    large, four = 'large' in path.name, '4layers' in path.name
    bb, head = cfg.model.backbone, cfg.model.decode_head
    dim = 1024 if large else 768
    assert (bb.type, bb.mode, bb.embed_dim, bb.depth, bb.patch_size) == (
        'MAEDenseFrozenViT',
        'mae',
        dim,
        24 if large else 12,
        16,
    )
    assert bb.layers == ([-4, -3, -2, -1] if four else [-1]) and head.in_channels == dim * len(bb.layers)
    assert cfg.model.pretrained.endswith(
        'mae_pretrain_vit_large.pth' if large else 'mae_pretrain_vit_base.pth'
    )
    assert (head.type, head.num_classes, head.lrs, head.norm_cfg.type) == (
        'LinearProbeDecodeHead',
        150,
        [1e-3],
        'SyncBN',
    )
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.betas, opt.weight_decay, 'lr' in opt) == ('AdamW', (0.9, 0.999), 1e-4, False)
    assert (cfg.runner_type, cfg.default_hooks.checkpoint.type) == (
        'MAEDenseRunner',
        'CrashSafeCheckpointHook',
    )
    warm, poly = cfg.param_scheduler
    # mmcv 0.x's poly x warm-up (mmengine reaches a scheduler's end value at `end - 1`)
    assert (warm.start_factor, warm.end, poly.begin, poly.end, poly.power) == (1e-6, 1501, 0, 40001, 1.0)
    assert cfg.train_cfg.max_iters == 40000 and cfg.train_dataloader.batch_size == 16
    steps = [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
    assert 'PhotoMetricDistortion' in steps and cfg.train_dataloader.dataset.pipeline[2].scale == (
        99999999,
        512,
    )
    tc = cfg.model.test_cfg
    assert (tc.mode, tuple(tc.crop_size), tuple(tc.stride)) == ('slide', (512, 512), (341, 341))
    assert cfg.test_dataloader.dataset.pipeline[1].scale == (99999999, 512)
    fast = cfg.fast_mode
    assert fast.train_dataloader.dataset.dtype == 'float16' and fast.train_cfg.max_iters == 10000
    assert fast.model.decode_head.lrs == [3e-4, 1e-3, 3e-3, 1e-2]
    crops = fast.train_dataloader.dataset.crops.dataset.pipeline
    assert 'PhotoMetricDistortion' not in [t['type'] for t in crops] and len(crops) == len(steps) - 1


def test_probe_config_builds_and_trains_one_step_at_reduced_size():
    from helpers import seg_batch
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(
        str(ROOT / 'configs/ade20k/linear-probe_mae-base_4layers_1x16_512x512_40k_ade20k.py')
    )
    cfg.model.pretrained = None
    cfg.model.data_preprocessor.size = (64, 64)
    model = MODELS.build(cfg.model)
    model.init_weights()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head = model.decode_head.probe.heads[0].conv.weight.detach().clone()
    log = model.train_step(seg_batch(n=2, size=64, classes=150), wrapper)
    assert torch.isfinite(log['loss']) and not torch.equal(head, model.decode_head.probe.heads[0].conv.weight)
    assert all(torch.equal(frozen[k], v) for k, v in model.backbone.state_dict().items())


# --------------------------------------------------------------------------------------- data, metric
def test_fixed_crops_are_the_same_draw_whatever_the_global_state(ade):
    from mmengine.config import Config
    from mmseg.registry import DATASETS

    cfg = Config.fromfile(DEMO).fast_mode.train_dataloader.dataset.crops
    cfg.dataset.data_root = str(ade)
    crops = DATASETS.build(dict(cfg, views=2))
    assert len(crops) == 12
    np.random.seed(1)
    first = crops[7]
    state = np.random.get_state()
    np.random.seed(2)
    again = crops[7]
    np.random.set_state(state)
    assert torch.equal(first['inputs'], again['inputs'])
    assert torch.equal(first['data_samples'].gt_sem_seg.data, again['data_samples'].gt_sem_seg.data)
    assert first['data_samples'].crop_index == 7
    assert np.random.get_state()[1].tolist() == state[1].tolist()  # the global generator is untouched
    other_view = crops[1]  # image 1 again (crop 7 = view 1 of image 1), another draw
    assert not torch.equal(first['inputs'], other_view['inputs'])
    subset = DATASETS.build(dict(cfg, num_crops=3))
    assert subset.indices.tolist() == [0, 2, 5] and torch.equal(subset[2]['inputs'], crops[5]['inputs'])


def test_sweep_metric_reports_mmseg_iou_of_the_best_head():
    from mmseg.evaluation.metrics import IoUMetric

    from mae_dense.openmmlab.probe import ProbeSweepIoUMetric

    g = torch.Generator().manual_seed(0)
    meta = dict(classes=tuple(f'c{i}' for i in range(5)))
    lrs = (1e-3, 1e-2, 1e-1)
    sweep, single = ProbeSweepIoUMetric(), [IoUMetric() for _ in lrs]
    for m in (sweep, *single):
        m.dataset_meta = meta
    for _ in range(3):
        label = torch.randint(0, 5, (1, 9, 11), generator=g)
        label[0, :2] = 255
        preds = torch.where(
            torch.rand(3, 9, 11, generator=g) < torch.tensor([0.3, 0.8, 0.5])[:, None, None],
            label.expand(3, -1, -1),
            torch.randint(0, 5, (3, 9, 11), generator=g),
        )
        gt = dict(data=label)
        sweep.process({}, [dict(probe_pred_sem_seg=dict(data=preds), gt_sem_seg=gt, probe_lrs=lrs)])
        for k, m in enumerate(single):
            m.process({}, [dict(pred_sem_seg=dict(data=preds[k : k + 1]), gt_sem_seg=gt)])
    got = sweep.compute_metrics(sweep.results)
    expect = [m.compute_metrics(m.results) for m in single]
    best = int(np.argmax([e['mIoU'] for e in expect]))
    assert best == 1 and got['lr'] == lrs[1]
    assert {k: got[k] for k in ('aAcc', 'mIoU', 'mAcc')} == pytest.approx(expect[best])
    assert [got[f'mIoU@lr={lr:g}'] for lr in lrs] == pytest.approx([e['mIoU'] for e in expect])


# ------------------------------------------------------------------------------------------------ key
def test_cache_key_follows_the_checkpoint_bytes_and_the_crops(mae_checkpoint, tmp_path):
    import copy
    import shutil

    from mmengine.config import Config

    from mae_dense.data.feature_cache import cache_key

    demo = Config.fromfile(DEMO)
    demo.merge_from_dict(demo.fast_mode)

    def key(pretrained, **changes):
        cfg = copy.deepcopy(demo)
        cfg.merge_from_dict({'model.pretrained': pretrained, **changes})
        return cache_key(probe_cli.cache_spec(cfg, probe_cli.checkpoint_digest(cfg)[1]))

    moved = tmp_path / 'elsewhere.pth'
    shutil.copy(mae_checkpoint, moved)
    base = key(str(mae_checkpoint))
    assert key(str(moved)) == base  # the bytes, not the path
    other = torch.load(moved, weights_only=True)
    other['model']['blocks.0.attn.qkv.bias'] += 1e-3
    torch.save(other, moved)
    assert key(str(moved)) != base  # another checkpoint
    crops = 'train_dataloader.dataset.crops'
    changed = [
        key(str(mae_checkpoint), **{f'{crops}.seed': 1}),
        key(str(mae_checkpoint), **{f'{crops}.views': 2}),
        key(str(mae_checkpoint), **{f'{crops}.dataset.pipeline.3.crop_size': (96, 96)}),
        key(str(mae_checkpoint), **{'model.backbone.layers': [-2, -1], 'model.decode_head.in_channels': 192}),
        key(str(mae_checkpoint), **{'train_dataloader.dataset.dtype': 'float32'}),
        key(None),
        key(None, **{'model.backbone.init_seed': 1}),
    ]
    assert len({base, *changed}) == len(changed) + 1
    assert key(str(mae_checkpoint), **{'train_dataloader.batch_size': 3}) == base  # not a feature setting


# ------------------------------------------------------------------------------------------------ CLI
@pytest.mark.slow
def test_cli_writes_probe_result_and_reuses_its_cache(ade, mae_checkpoint, tmp_path):
    """`tools/probe.py` and `mae-dense probe`, end to end in fresh processes (fast mode, tiny run)."""
    from mae_dense.checkpoint import file_sha256

    opts = _options(
        ade,
        FAST_ROOT,
        f'model.pretrained={mae_checkpoint}',
        f'probe_cache_root={tmp_path / "c"}',
    )
    runs = {}
    for name, entry in (
        ('tool', [str(ROOT / 'tools/probe.py')]),
        ('cli', ['-m', 'mae_dense', 'probe']),
    ):
        args = [sys.executable, *entry, DEMO, '--work-dir', str(tmp_path / name), '--cfg-options', *opts]
        r = _run(args, cwd=tmp_path)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert 'probe (fast): mIoU' in r.stdout
        runs[name] = json.loads((tmp_path / name / 'probe_result.json').read_text())
    first, second = runs['tool'], runs['cli']
    assert first['mode'] == 'fast' and first['config'] == DEMO and first['iterations'] == 4
    assert set(first['metrics']) == {'aAcc', 'mIoU', 'mAcc'} and 0 <= first['metrics']['mIoU'] <= 100
    assert first['lrs'] == [1e-2, 3e-2, 1e-1] and first['lr'] in first['lrs']
    assert [float(k) for k in first['sweep']] == first['lrs']
    assert first['metrics']['mIoU'] == max(first['sweep'].values()) == first['sweep'][f'{first["lr"]:g}']
    assert first['checkpoint_sha256'] == file_sha256(mae_checkpoint) and first['pretrained'] == str(
        mae_checkpoint
    )
    assert not first['cache']['reused'] and 'extract_s' in first['timing'] and first['cache']['crops'] == 6
    assert second['cache']['reused'] and 'extract_s' not in second['timing']
    assert second['cache']['dir'] == first['cache']['dir'] and second['metrics'] == first['metrics']


@pytest.mark.parametrize(
    'case',
    ['no_config', 'not_a_probe', 'no_checkpoint', 'no_data', 'optimizer_lr', 'in_channels', 'bad_mode'],
)
def test_bad_input_is_one_line(case, ade, tmp_path, capsys):
    config, mode = DEMO, 'augmented'
    opts = _options(ade, AUG_ROOT)
    expect = {
        'no_config': 'nowhere.py: config file not found',
        'not_a_probe': 'not a probe config',
        'no_checkpoint': 'missing.pth: checkpoint file not found',
        'no_data': 'elsewhere',
        'optimizer_lr': 'optim_wrapper.optimizer.lr=0.1',
        'in_channels': 'model.decode_head.in_channels=64: the backbone gives 96',
        'bad_mode': "invalid choice: 'slow'",
    }[case]
    if case == 'no_config':
        config = str(tmp_path / 'nowhere.py')
    elif case == 'not_a_probe':
        config = str(ROOT / 'configs/demo/upernet_vit-tiny_synthetic_ade20k.py')
    elif case == 'no_checkpoint':
        opts.append(f'model.pretrained={tmp_path / "missing.pth"}')
    elif case == 'no_data':
        opts[0] = f'{AUG_ROOT}.data_root={tmp_path / "elsewhere"}'
    elif case == 'optimizer_lr':
        opts.append('optim_wrapper.optimizer.lr=0.1')
    elif case == 'in_channels':
        opts.append('model.decode_head.in_channels=64')
    elif case == 'bad_mode':
        mode = 'slow'
    argv = [config, '--work-dir', str(tmp_path / 'w'), '--mode', mode, '--cfg-options', *opts]
    if case == 'bad_mode':
        with pytest.raises(SystemExit) as exit_info:
            probe_cli.main(argv)
        assert exit_info.value.code == 2
    else:
        assert probe_cli.main(argv) == 1
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    last = err.strip().splitlines()[-1]
    assert (
        ': error: argument --mode' in last if case == 'bad_mode' else last.startswith('error: ')
    ) and expect in last
    assert not (tmp_path / 'w' / 'probe_result.json').exists()


@pytest.mark.slow
def test_dist_train_sh_runs_the_augmented_probe(ade, tmp_path):
    """The augmented mode is a plain mmengine training: the OpenMMLab launcher runs the probe config as is."""
    opts = _options(ade, AUG_ROOT, f'val_dataloader.dataset.data_root={ade}', 'train_cfg.val_interval=4')
    opts += ['default_hooks.checkpoint.interval=4']
    args = [
        'sh',
        str(ROOT / 'tools/dist_train.sh'),
        DEMO,
        '1',
        '--work-dir',
        str(tmp_path / 'w'),
        '--cfg-options',
        *opts,
    ]
    r = _run(args, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / 'w' / 'iter_4.pth').is_file()
    log = next((tmp_path / 'w').rglob('*.log')).read_text()
    assert 'mIoU@lr=0.03:' in log and 'Iter(val) [2/2]' in log
