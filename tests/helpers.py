"""Helpers shared by the tests: the tiny ViT size, non-trivial weights, launching a tool."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch

from mae_dense.models import MaskedAutoencoder, VisionTransformer
from mae_dense.suite.launch import free_port

ROOT = Path(__file__).resolve().parents[1]

# A tiny ViT: 64-d, 4 blocks, 4 heads, patch 8 (ViT-B/L/H are checked by building them elsewhere).
TINY = dict(embed_dim=64, depth=4, num_heads=4, patch_size=8)
# A tiny MAE: img 32, patch 8, 64-d 2 blocks 4 heads; decoder 32-d, 1 block, 4 heads (the same model as
# the tiny pretraining config below, so tools can be pointed at it with --config).
TINY_MAE = dict(
    img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4,
    decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4,
)  # fmt: skip
TINY_MAE_CONFIG = ROOT / 'configs/pretrain/mae_vit-tiny-p8_1xb16-amp-coslr-10e_synthetic.py'


def tiny_mae(**kwargs: Any) -> MaskedAutoencoder:
    """The tiny MAE (``kwargs`` override its arguments)."""
    return MaskedAutoencoder(**{**TINY_MAE, **kwargs})


# torch.compile on CPU generates C++: without a compiler, the compile tests are skipped with this reason.
requires_inductor = pytest.mark.skipif(
    shutil.which(os.environ.get('CXX', 'g++')) is None,
    reason='inductor needs a C++ compiler to compile on CPU',
)


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter non-trivial values (zero-initialised tables and unit layer scales hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module


def run_tool(args: list[str], cwd, **extra_env: str) -> subprocess.CompletedProcess:
    """Run one of the project's tools in a clean environment, with its own torchrun port and ``extra_env``."""
    env = {
        'PATH': '/usr/bin:/bin',
        'PYTHON': sys.executable,
        'OMP_NUM_THREADS': '2',
        'PORT': str(free_port()),
        **extra_env,
    }
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


class Killed(Exception):
    """Raised by the tests' hooks that stand for a killed job (the run stops at a chosen point)."""


def config_with_hooks(directory, config, *hooks: dict, imports: tuple[str, ...] = ()):
    """A config file in ``directory`` that is ``config`` plus ``hooks`` after its own custom hooks (and the
    modules ``imports`` that register them), for runs that must stop or fail at a chosen point."""
    from pathlib import Path

    from mmengine.config import Config

    base = Config.fromfile(config).to_dict()
    path = Path(directory) / f'hooked_{Path(config).name}'
    path.write_text(
        f'_base_ = {str(config)!r}\n'
        f'custom_imports = dict(imports={[*base["custom_imports"]["imports"], *imports]!r}, '
        'allow_failed_imports=False)\n'
        f'custom_hooks = {[*base.get("custom_hooks", []), *hooks]!r}\n'
    )
    return path


# ---------------------------------------------------------------------------------- tiny pretraining runs
def log_text(work_dir: Path) -> str:
    """The text of every log file mmengine wrote under ``work_dir`` (one per run, in start order)."""
    return '\n'.join(p.read_text() for p in sorted(Path(work_dir).glob('*/*.log')))


def model_state(path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a checkpoint, read through the project's loading policy."""
    from mae_dense.checkpoint import load_file

    return load_file(path)['state_dict']


def assert_same_weights(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    """The same tensors under the same names, within 1e-6 (a resumed run against an uninterrupted one)."""
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=key)


# ------------------------------------------------------------------------------------- pipeline configs
def write_yaml(path: Path, cfg: dict) -> Path:
    """``cfg`` as a YAML file at ``path`` (a pipeline config)."""
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    return path


def probe_cfg(directory: Path) -> str:
    """A probe config in ``directory`` for the stand-in probe (``fake_probe``): no pretrained weights, 96-d."""
    path = Path(directory) / 'probe_cfg.py'
    path.write_text('model = dict(pretrained=None, backbone=dict(embed_dim=96))\n')
    return str(path)


# ----------------------------------------------------------------- models and batches shared by tests
def mmseg_mae(img=32, out_indices=(0, 1, 2, 3)):
    from mmseg.models.backbones import MAE

    model = MAE(
        img_size=img,
        patch_size=TINY['patch_size'],
        embed_dims=TINY['embed_dim'],
        num_layers=TINY['depth'],
        num_heads=TINY['num_heads'],
        mlp_ratio=4,
        out_indices=list(out_indices),
        init_values=1.0,
        norm_cfg=dict(type='LN', eps=1e-6),
    )
    model.eval()  # mmseg's BEiT.train() returns None, so no chaining
    return model


def seg_vit(img=32, **kw):
    return VisionTransformer(
        mode='seg', img_size=img, out_indices=(0, 1, 2, 3), init_values=1.0, **TINY, **kw
    ).eval()


def timm_vit(img=32, **sizes):
    """timm's ViT (no head, no pooling) of the TINY sizes (``sizes`` override them)."""
    import timm.models.vision_transformer as tv

    sizes = {**TINY, **sizes}
    return tv.VisionTransformer(
        img_size=img,
        patch_size=sizes['patch_size'],
        embed_dim=sizes['embed_dim'],
        depth=sizes['depth'],
        num_heads=sizes['num_heads'],
        num_classes=0,
        global_pool='',
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
    ).eval()


def seg_batch(n=2, size=32, classes=5):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(n):
        s = SegDataSample(
            metainfo=dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size))
        )
        s.gt_sem_seg = PixelData(data=torch.randint(0, classes, (1, size, size), generator=g))
        samples.append(s)
    return dict(
        inputs=[torch.randint(0, 255, (3, size, size), generator=g, dtype=torch.uint8) for _ in range(n)],
        data_samples=samples,
    )


def mmseg_segmentor():
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    cfg = dict(
        type='EncoderDecoder',
        backbone=dict(
            type='MAE',
            img_size=32,
            patch_size=8,
            embed_dims=TINY['embed_dim'],
            num_layers=4,
            num_heads=4,
            out_indices=[0, 1, 2, 3],
            init_values=1.0,
            norm_cfg=dict(type='LN', eps=1e-6),
        ),
        neck=dict(
            type='Feature2Pyramid',
            embed_dim=TINY['embed_dim'],
            rescales=[4, 2, 1, 0.5],
            norm_cfg=dict(type='BN'),
        ),
        decode_head=dict(
            type='UPerHead',
            in_channels=[TINY['embed_dim']] * 4,
            in_index=[0, 1, 2, 3],
            channels=32,
            num_classes=5,
            norm_cfg=dict(type='BN'),
        ),
    )
    return randomize_(MODELS.build(cfg), seed=7)


def build_segmentor(crop=32, stride=21, classes=5, **overrides):
    """A tiny UperNet (``MAEDenseEncoderDecoder``) with random weights, in eval mode; ``overrides`` are
    more keys of the model config (``auxiliary_head``, ``train_cfg``)."""
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    import mae_dense.openmmlab.segmentation  # noqa: F401  (MAEDenseEncoderDecoder, MAEDenseViT)

    register_all_modules(init_default_scope=True)  # an earlier Runner may have left another scope
    from mmengine.config import ConfigDict

    model = MODELS.build(
        ConfigDict(
            dict(
                type='MAEDenseEncoderDecoder',
                backbone=dict(
                    type='MAEDenseViT',
                    mode='seg',
                    img_size=crop,
                    out_indices=[0, 1, 2, 3],
                    init_values=1.0,
                    **TINY,
                ),
                neck=dict(
                    type='Feature2Pyramid', embed_dim=64, rescales=[4, 2, 1, 0.5], norm_cfg=dict(type='BN')
                ),
                decode_head=dict(
                    type='UPerHead',
                    in_channels=[64] * 4,
                    in_index=[0, 1, 2, 3],
                    channels=32,
                    num_classes=classes,
                    norm_cfg=dict(type='BN'),
                ),
                test_cfg=dict(mode='slide', crop_size=(crop, crop), stride=(stride, stride), max_batch=5),
            ),
            **overrides,
        )
    )
    randomize_(model, seed=3)
    for m in model.modules():  # sane BN statistics for eval
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(1.0)
            m.running_mean.zero_()
    model.eval()
    return model


def official_layout(state_dict: dict) -> dict:
    """A :class:`MaskedAutoencoder` state dict in the official ``models_mae.py`` names (no ``backbone.``)."""
    return {k.removeprefix('backbone.'): v for k, v in state_dict.items()}
