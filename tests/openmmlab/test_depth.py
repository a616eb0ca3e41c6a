"""Depth from frozen features (DINOv2's protocols on mmseg's DepthEstimator): the 256-bin read-out and
mmseg's DepthMetric against numpy, the frozen backbone's cls-token and un-normed read, the DPT head's
split of the features, and the toy linear depth probe trained end to end on synthetic NYU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_
from mmengine.structures import PixelData
from PIL import Image

import mae_dense.openmmlab  # noqa: F401
import mae_dense.openmmlab.depth  # noqa: F401
import mae_dense.openmmlab.probe  # noqa: F401
from mae_dense.cli import probe as probe_cli
from mae_dense.data.synthetic import generate_synthetic_nyu
from mae_dense.errors import ConfigError
from mae_dense.models.probe import FrozenViT
from mae_dense.models.vit import VisionTransformer
from mae_dense.openmmlab.depth import DPTDepthHead, LinearDepthBinsHead, bins_readout

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / 'configs/demo/linear-depth_vit-tiny_synthetic_nyu.py'
NYU_CONFIGS = sorted((ROOT / 'configs/nyu').glob('*.py'))
TINY_VIT = dict(img_size=128, patch_size=16, embed_dim=96, depth=4, num_heads=3)  # the demo's encoder


@pytest.fixture(autouse=True)
def _mmseg_scope():
    """The heads build their losses from mmseg's registry under the default scope, which an earlier test
    (mmdet's) may have left set; the depth configs set ``default_scope='mmseg'`` themselves."""
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope('mmseg'):
        yield


def test_bins_readout_is_the_papers_linear_normalisation():
    """depth = sum_k c_k (relu(s_k) + 0.1) / sum_j (relu(s_j) + 0.1), c = linspace(0.001, 10, 256)."""
    logits = torch.randn(2, 256, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    got = bins_readout(logits, 1e-3, 10.0).numpy()
    s = np.maximum(logits.numpy(), 0) + 0.1
    expect = np.einsum('bkhw,k->bhw', s / s.sum(1, keepdims=True), np.linspace(1e-3, 10.0, 256))[:, None]
    np.testing.assert_allclose(got, expect, rtol=1e-12)


def test_linear_head_scores_at_the_grid_equal_dinov2s_upsample_then_conv():
    """DINOv2 upsamples the features x4 and then applies the 1x1 conv; the head convolves first (1/16 of the
    work): the same depth map."""
    head = randomize_(LinearDepthBinsHead(in_channels=12, n_bins=256), seed=3)
    x = torch.randn(2, 12, 5, 7)
    with torch.no_grad():
        got = head(x)
        up = F.interpolate(x, size=(20, 28), mode='bilinear', align_corners=False)
        expect = bins_readout(head.conv_seg(up), 1e-3, 10.0)
    assert got.shape == (2, 1, 20, 28)
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)


def test_depth_metric_is_rmse_absrel_delta1_averaged_over_images():
    """mmseg's DepthMetric (valid pixels in (min, max)) against numpy on the same arrays."""
    from mmseg.evaluation.metrics import DepthMetric

    rng = np.random.default_rng(1)
    gts = [rng.uniform(0.5, 12, size=(6, 8)) for _ in range(3)]
    gts[0][0, :4] = 0.0  # invalid
    preds = [g * rng.uniform(0.7, 1.4, size=g.shape) + 0.05 for g in gts]
    metric = DepthMetric(min_depth_eval=1e-3, max_depth_eval=10.0)
    metric.process({}, [
        dict(pred_depth_map=dict(data=torch.tensor(p[None])), gt_depth_map=dict(data=torch.tensor(g[None])))
        for p, g in zip(preds, gts)
    ])  # fmt: skip
    got = metric.compute_metrics(metric.results)
    per_image = []
    for p, g in zip(preds, gts):
        valid = (g > 1e-3) & (g < 10.0)
        p, g = p[valid], g[valid]
        ratio = np.maximum(p / g, g / p)
        per_image.append((np.sqrt(np.mean((p - g) ** 2)), np.mean(np.abs(p - g) / g), np.mean(ratio < 1.25)))
    rmse, abs_rel, d1 = np.mean(per_image, axis=0)
    np.testing.assert_allclose([got['rmse'], got['abs_rel'], got['d1']], [rmse, abs_rel, d1], rtol=1e-6)


def test_frozen_vit_reads_unnormed_blocks_with_their_cls_token():
    vit = randomize_(VisionTransformer(mode='mae', **TINY_VIT), seed=2)
    frozen = FrozenViT(layers=(1, 3), norm=False, cls_token=True, **TINY_VIT)
    frozen.load_state_dict(vit.state_dict())
    x = torch.randn(2, 3, 48, 64)
    out = frozen(x)
    tokens, hw = vit.embed(x)
    expect = []
    with torch.no_grad():
        for i, blk in enumerate(vit.blocks):
            tokens = blk(tokens, hw)
            if i in (1, 3):  # no final norm: DINOv2's get_intermediate_layers(norm=False)
                patches = tokens[:, 1:].transpose(1, 2).reshape(2, 96, *hw)
                expect += [patches, tokens[:, 0, :, None, None].expand(-1, -1, *hw)]
    assert frozen.feature_channels == 4 * 96
    torch.testing.assert_close(out, torch.cat(expect, 1))


def test_dpt_head_is_mmsegs_dpt_on_the_split_features_with_dinov2s_depth_output():
    from mmseg.models.decode_heads import DPTHead

    c = 32
    head = randomize_(DPTDepthHead(embed_dims=c, post_process_channels=(4, 8, 16, 32), channels=16), seed=4)
    head.eval()
    plain = DPTHead(in_channels=[c] * 4, in_index=(0, 1, 2, 3), input_transform='multiple_select', channels=16,
                    num_classes=1, out_channels=1, threshold=0.5, embed_dims=c, post_process_channels=[4, 8, 16, 32],
                    readout_type='project')  # fmt: skip
    plain.conv_seg = head.conv_seg
    plain.load_state_dict(head.state_dict())
    plain.eval()
    maps = [torch.randn(2, c, 4, 6) for _ in range(4)]
    cls = [torch.randn(2, c) for _ in range(4)]
    features = torch.cat([t for m, k in zip(maps, cls) for t in (m, k[:, :, None, None].expand_as(m))], 1)
    with torch.no_grad():
        got = head(features)
        expect = torch.relu(plain([[m, k] for m, k in zip(maps, cls)])) + 1e-3
    assert got.shape == (2, 1, 64, 96)  # x16 of the patch grid
    torch.testing.assert_close(got, expect)


@pytest.mark.parametrize('path', NYU_CONFIGS, ids=lambda p: p.stem)
def test_nyu_configs_build_at_reduced_width_with_dinov2s_layers(path):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    cfg = Config.fromfile(path)
    large = 'large' in path.stem
    layers = cfg.model.backbone.layers
    if '4layers' in path.stem or 'dpt' in path.stem:
        assert layers == ([4, 11, 17, 23] if large else [2, 5, 8, 11])  # dinov2/hub/depthers.py
    else:
        assert layers == [23 if large else 11]
    assert cfg.model.backbone.norm is False and cfg.model.backbone.cls_token is True
    assert cfg.test_evaluator.crop_type == 'nyu_crop' and cfg.test_evaluator.max_depth_eval == 10.0
    init_default_scope('mmseg')
    model_cfg = cfg.model.to_dict()
    model_cfg.update(pretrained=None)
    model_cfg['backbone'].update(embed_dim=32, num_heads=2)
    model = MODELS.build(model_cfg)
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        depth = model.decode_head(model.extract_feat(x))
    assert depth.shape[1] == 1 and bool((depth >= 1e-3).all())


def test_head_width_that_does_not_fit_the_backbone_is_one_line():
    from mmengine.config import Config
    from mmseg.registry import MODELS

    cfg = Config.fromfile(DEMO)
    model_cfg = cfg.model.to_dict()
    model_cfg.update(pretrained=None)
    model_cfg['decode_head']['in_channels'] = 100
    with pytest.raises(ConfigError, match=r'in_channels=100: the backbone gives 192 \(1 blocks x 96 x 2'):
        MODELS.build(model_cfg)


@pytest.fixture(scope='module')
def nyu_root(tmp_path_factory):
    return generate_synthetic_nyu(tmp_path_factory.mktemp('nyu') / 'nyu', num_train=16, num_test=6, seed=5)


@pytest.fixture(scope='module')
def mae_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp('ckpt') / 'mae_tiny.pth'
    vit = randomize_(VisionTransformer(mode='mae', **TINY_VIT), seed=6)
    torch.save({'model': vit.state_dict()}, path)
    return path


def _depths(root: Path, split: str) -> list[np.ndarray]:
    """A split's depth maps in metres (0 = invalid)."""
    return [
        np.asarray(Image.open(p), np.float64) / 1000
        for p in sorted((root / 'annotations' / split).glob('*.png'))
    ]


def _mean_depth_rmse(root: Path) -> float:
    """RMSE on the test split of predicting the training set's mean valid depth (the floor to beat), averaged
    over images as DepthMetric does."""
    mean = np.concatenate([d[d > 0] for d in _depths(root, 'train')]).mean()
    return float(np.mean([np.sqrt(np.mean((d[d > 0] - mean) ** 2)) for d in _depths(root, 'test')]))


def test_linear_depth_probe_learns_and_leaves_the_backbone_bit_identical(nyu_root, mae_checkpoint, tmp_path):
    """The demo's probe (fast mode: cached features of fixed crops) beats the mean-depth predictor on the test
    split, and the checkpoint it saves holds the released backbone weights unchanged."""
    options = [
        f'model.pretrained={mae_checkpoint}',
        f'train_dataloader.dataset.crops.dataset.data_root={nyu_root}',
        f'test_dataloader.dataset.data_root={nyu_root}',
        f'probe_cache_root={tmp_path / "cache"}',
        'randomness.seed=0',
    ]
    rc = probe_cli.main(
        [str(DEMO), '--work-dir', str(tmp_path / 'w'), '--mode', 'fast', '--cfg-options', *options]
    )
    assert rc == 0
    result = json.loads((tmp_path / 'w' / 'probe_result.json').read_text())
    floor = _mean_depth_rmse(nyu_root)
    assert result['metrics']['rmse'] < 0.8 * floor, (result['metrics'], floor)
    assert result['cache']['crops'] == 32 and result['lr'] == pytest.approx(2e-2)
    state = torch.load(tmp_path / 'w' / 'iter_60.pth', map_location='cpu', weights_only=False)['state_dict']
    released = torch.load(mae_checkpoint, weights_only=True)['model']
    assert all(torch.equal(state[f'backbone.{k}'], v) for k, v in released.items())
    assert any(k.startswith('decode_head.conv_seg') for k in state)
    # the cache holds each fixed crop's depth in metres, as the crop computed on the fly gives it
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    from mae_dense.data.feature_cache import FeatureCache

    init_default_scope('mmseg')
    crops_cfg = Config.fromfile(DEMO).fast_mode.train_dataloader.dataset.crops.to_dict()
    crops_cfg['dataset'].update(data_root=str(nyu_root))
    crops = DATASETS.build(dict(crops_cfg, type='ProbeFixedCrops'))
    cache = FeatureCache(result['cache']['dir'])
    for i in (0, 17):
        np.testing.assert_array_equal(cache[i][1], crops[i]['data_samples'].gt_depth_map.data[0].numpy())


def test_dpt_probe_trains_its_head_only():
    """One DepthEstimator loss step of the DPT config at reduced width: finite SiLog loss, gradients in the
    head, none in the frozen backbone."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    init_default_scope('mmseg')
    model_cfg = Config.fromfile(ROOT / 'configs/nyu/dpt-depth_mae-base_nyu.py').model.to_dict()
    model_cfg.update(pretrained=None, data_preprocessor=None)
    model_cfg['backbone'].update(embed_dim=32, num_heads=2)
    model = MODELS.build(model_cfg)
    model.init_weights()
    model.train()
    depth = torch.rand(2, 1, 64, 96) * 5 + 0.5
    samples = []
    for d in depth:
        sample = SegDataSample(metainfo=dict(img_shape=(64, 96), pad_shape=(64, 96)))
        sample.set_data(dict(gt_depth_map=PixelData(data=d)))
        samples.append(sample)
    losses = model.loss(torch.randn(2, 3, 64, 96), samples)
    assert set(losses) == {'decode.loss_silog'} and torch.isfinite(losses['decode.loss_silog'])
    losses['decode.loss_silog'].backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.decode_head.conv_seg[-1].weight.grad.abs().sum() > 0
