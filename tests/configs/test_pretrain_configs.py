"""The ImageNet pretraining configs: names, recipe numbers, lr schedule, and one train step of each full-size
model (at a reduced input size: the encoder's sin-cos grid is fixed at ``img_size``, so the step builds the
model at 64 px, ViT-H/14 at 56). The children of one size differ only in their epochs, so one step per size
covers them; ViT-L and ViT-H steps (30-60 s of CPU AdamW each) are marked slow."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import TINY_MAE
from mmengine.config import Config
from mmengine.optim import AmpOptimWrapper, build_optim_wrapper
from mmengine.registry import MODELS, PARAM_SCHEDULERS

import mae_dense.openmmlab  # noqa: F401
import mae_dense.openmmlab.pretrain as pretrain
import mae_dense.openmmlab.pretrain.optim
from mae_dense.models.archs import mae_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / 'configs/pretrain').glob('mae_vit-*_in1k.py'))
ARCH = {'base': (768, 12, 16), 'large': (1024, 24, 16), 'huge': (1280, 32, 14)}  # width, depth, patch


def test_the_seven_configs_exist():
    names = [p.name for p in CONFIGS]
    expected = [
        f'mae_vit-{a}-p16_8xb512-amp-coslr-{e}e_in1k.py' for a in ('base', 'large') for e in (400, 800, 1600)
    ]
    assert sorted(names) == sorted(expected + ['mae_vit-huge-p14_8xb512-amp-coslr-1600e_in1k.py'])


@pytest.mark.filterwarnings('ignore:Detected call of .scheduler.step')  # no step: expected
def test_recipe_numbers_and_lr_schedule(monkeypatch):
    cfg = Config.fromfile(str(ROOT / 'configs/pretrain/mae_vit-base-p16_8xb512-amp-coslr-1600e_in1k.py'))
    assert cfg.custom_imports.imports == ['mae_dense.openmmlab', 'mae_dense.openmmlab.pretrain']
    assert (cfg.model.mask_ratio, cfg.model.norm_pix_loss, cfg.model.img_size) == (0.75, True, 224)
    data = cfg.train_dataloader
    assert data.batch_size == 512 and data.dataset.data_root == 'data/imagenet'
    assert (data.dataset.scale, data.dataset.interpolation, data.dataset.hflip_prob) == (
        (0.2, 1.0),
        'bicubic',
        0.5,
    )
    assert cfg.randomness == dict(seed=0, diff_rank_seed=True)
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', betas=(0.9, 0.95), weight_decay=0.05)

    # 8 processes x 512 x 1 = 4096 -> lr = 1.5e-4 x 4096 / 256 = 2.4e-3
    monkeypatch.setattr(mae_dense.openmmlab.pretrain.optim, 'get_world_size', lambda: 8)
    wrapper_cfg = cfg.optim_wrapper.to_dict()
    wrapper_cfg['paramwise_cfg']['batch_size'] = data.batch_size  # what MAEPretrainLoop fills in
    torch.manual_seed(0)
    model = pretrain.MAEPretrainer(arch=None, **TINY_MAE)
    wrapper = build_optim_wrapper(model, wrapper_cfg)
    assert isinstance(wrapper, AmpOptimWrapper) and wrapper.effective_batch_size == 4096
    peak = 2.4e-3
    assert wrapper.optimizer.defaults['lr'] == pytest.approx(peak)

    # 40 warm-up epochs, then half-cycle cosine to 0 at epoch 1600, per iteration (2 iterations per epoch here)
    epoch_len, epochs = 2, cfg.train_cfg.max_epochs
    schedulers = []
    for s in cfg.param_scheduler:
        s = dict(s)
        s.setdefault('end', epochs)  # the Runner's default: train_cfg.max_epochs
        schedulers.append(
            PARAM_SCHEDULERS.build(s, default_args=dict(optimizer=wrapper, epoch_length=epoch_len))
        )
    lrs = []
    for _ in range(epochs * epoch_len):
        lrs.append(wrapper.optimizer.param_groups[0]['lr'])
        for s in schedulers:
            s.step()
    warm = 40 * epoch_len
    assert lrs[0] == pytest.approx(peak * 1e-4)
    # linear; mmengine's LinearLR reaches the peak on the last warm-up iteration (the official code one later)
    assert lrs[warm // 2] == pytest.approx(peak * (1e-4 + (1 - 1e-4) * (warm // 2) / (warm - 1)))
    assert lrs[warm] == pytest.approx(peak)
    assert lrs[(warm + epochs * epoch_len) // 2] == pytest.approx(
        peak / 2, rel=1e-3
    )  # half-way down the cosine
    assert lrs[-1] == pytest.approx(0.0, abs=peak * 1e-5)


def _build(config: Path, size: int | None = None) -> tuple[Config, torch.nn.Module]:
    cfg = Config.fromfile(str(config))
    width, depth, patch = ARCH[cfg.model.arch]
    assert f'-p{patch}_' in config.name and f'{cfg.train_cfg.max_epochs}e' in config.name
    if size is not None:
        cfg.model.img_size = size
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    assert (model.backbone.embed_dim, model.backbone.depth, model.patch_size) == (width, depth, patch)
    assert len(model.decoder_blocks) == 8 and model.decoder_embed.out_features == 512
    return cfg, model


def _optim_wrapper(cfg: Config, model: torch.nn.Module):
    wrapper_cfg = cfg.optim_wrapper.to_dict()
    wrapper_cfg['paramwise_cfg']['batch_size'] = cfg.train_dataloader.batch_size
    return build_optim_wrapper(model, wrapper_cfg)


@pytest.mark.parametrize('config', CONFIGS, ids=lambda p: p.stem)
def test_config_names_its_architecture(config):
    cfg = Config.fromfile(str(config))
    arch = mae_config(cfg.model.arch)
    width, depth, patch = ARCH[cfg.model.arch]
    assert (arch['embed_dim'], arch['depth'], arch['patch_size']) == (width, depth, patch)
    assert (arch['decoder_embed_dim'], arch['decoder_depth'], arch['decoder_num_heads']) == (512, 8, 16)
    assert f'_vit-{cfg.model.arch}-p{patch}_8xb{cfg.train_dataloader.batch_size}-' in config.name
    assert f'-{cfg.train_cfg.max_epochs}e_' in config.name
    assert cfg.optim_wrapper.type == 'SkipNonFiniteAmpOptimWrapper'  # an AmpOptimWrapper (see test_pretrain)
    # the project's Runner and crash-safe checkpoint hook, named as theirs (nothing of mmengine's replaced)
    assert (cfg.runner_type, cfg.default_hooks.checkpoint.type) == (
        'MAEDenseRunner',
        'CrashSafeCheckpointHook',
    )


def _one_step(arch: str) -> None:
    configs = [c for c in CONFIGS if f'_vit-{arch}-' in c.name]
    models = {str(Config.fromfile(str(c)).model) for c in configs}
    assert len(models) == 1  # the children of one size differ only in their epochs: one step covers them
    patch = ARCH[arch][2]
    size = 4 * patch  # a 4 x 4 grid: 16 patches, 4 visible
    cfg, model = _build(configs[0], size)
    wrapper = _optim_wrapper(cfg, model)
    before = model.decoder_pred.weight.detach().clone()
    batch = dict(inputs=torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8))
    log_vars = model.train_step(batch, wrapper)
    assert torch.isfinite(log_vars['loss'])
    assert not torch.equal(before, model.decoder_pred.weight)


def test_base_configs_train_one_step():
    _one_step('base')


@pytest.mark.slow
@pytest.mark.parametrize('arch', ['large', 'huge'])
def test_large_and_huge_configs_train_one_step(arch):
    _one_step(arch)  # CPU AdamW over 330M / 630M parameters: 30-60 s and 5-10 GB
