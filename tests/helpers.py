"""Helpers shared by the tests: the tiny ViT size, non-trivial weights, launching a tool."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from mae_dense.models import MaskedAutoencoder
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
