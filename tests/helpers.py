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


# ------------------------------------------------ timm backbones: release files in their families' layouts
TIMM_FIXTURES = Path(__file__).resolve().parent / 'models' / 'fixtures'


def _dinov2_release(sd: dict, model, fixture: dict) -> dict:
    """facebookresearch/dinov2: register_tokens, mask_token, pos_embed with the cls slot (timm folds that
    slot's row into cls_token), blocks named as timm's."""
    out = dict(sd)
    row = torch.randn_like(out['pos_embed'][:, :1])  # the file's cls position row
    out['register_tokens'] = out.pop('reg_token')
    out['cls_token'] = out['cls_token'] - row
    out['pos_embed'] = torch.cat([row, out['pos_embed']], dim=1)
    out['mask_token'] = torch.zeros_like(out['cls_token'][0])  # (1, C)
    return out


def _deit3_release(sd: dict, model, fixture: dict) -> dict:
    """facebookresearch/deit models_v2.py: layer scale as gamma_1/gamma_2, a 1000-class head, under 'model'."""
    out = {k.replace('.ls1.gamma', '.gamma_1').replace('.ls2.gamma', '.gamma_2'): v for k, v in sd.items()}
    return {'model': out}


def _eva02_release(sd: dict, model, fixture: dict) -> dict:
    """baaivision/EVA EVA-02 MIM: q_bias/v_bias, SwiGLU w1/w2/ffn_ln/w3, the final norm as
    'norm', mask token, lm_head and the RoPE buffers (per model and per block), under 'model'."""
    names = (
        ('.attn.q_proj.bias', '.attn.q_bias'),
        ('.attn.v_proj.bias', '.attn.v_bias'),
        ('.mlp.fc1_g.', '.mlp.w1.'),
        ('.mlp.fc1_x.', '.mlp.w2.'),
        ('.mlp.norm.', '.mlp.ffn_ln.'),
        ('.mlp.fc2.', '.mlp.w3.'),
    )
    out = {}
    for k, v in sd.items():
        for old, new in names:
            k = k.replace(old, new)
        out['norm.' + k[len('fc_norm.') :] if k.startswith('fc_norm.') else k] = v
    c = out['cls_token'].shape[-1]
    grid, head_dim = model.patch_embed.grid_size, c // model.blocks[0].attn.num_heads
    rope = torch.zeros(grid[0] * grid[1], head_dim, device=out['cls_token'].device)
    out['mask_token'] = torch.zeros_like(out['cls_token'])
    out['lm_head.weight'] = torch.randn(1024, c, device=rope.device)
    out['lm_head.bias'] = torch.zeros(1024, device=rope.device)
    for where in ['rope.'] + [f'blocks.{i}.attn.rope.' for i in range(len(model.blocks))]:
        out[where + 'freqs_cos'], out[where + 'freqs_sin'] = rope.cos(), rope.sin()
    return {'model': out}


def _siglip_release(sd: dict, model, fixture: dict) -> dict:
    """open_clip (timm/ViT-B-16-SigLIP): the timm trunk under visual.trunk.*, the text tower beside it (its
    names from the fixture; tiny stand-in values, timm's filter keeps visual.trunk.* only)."""
    out = {f'visual.trunk.{k}': v for k, v in sd.items()}
    device = next(iter(sd.values())).device
    for k, shape in fixture['keys'].items():
        if not k.startswith('visual.'):
            out[k] = torch.zeros(shape if device.type == 'meta' else [1] * len(shape), device=device)
    return out


TIMM_RELEASE_LAYOUTS = {
    'dinov2_reg': _dinov2_release,
    'siglip': _siglip_release,
    'eva02': _eva02_release,
    'deit3': _deit3_release,
}


def timm_release_file(family: str, path: Path, seed: int = 0, **timm_kwargs: Any):
    """(timm's model of ``family`` with random weights, ``path`` written in the family's release layout).

    The family's timm name and key layout are its fixture's (tests/models/fixtures/<family>_keys.json)."""
    import json

    import timm

    fixture = json.loads((TIMM_FIXTURES / f'{family}_keys.json').read_text())
    torch.manual_seed(seed)
    model = timm.create_model(fixture['timm'], pretrained=False, dynamic_img_size=True, **timm_kwargs)
    randomize_(model, seed)
    tree = TIMM_RELEASE_LAYOUTS[family](model.state_dict(), model, fixture)
    if path.suffix == '.safetensors':
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in tree.items()}, str(path))
    else:
        torch.save(tree, path)
    return model.eval(), path
