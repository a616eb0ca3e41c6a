"""Helpers shared by the tests: the tiny ViT size, non-trivial weights, launching a tool."""

from __future__ import annotations

import socket
import subprocess
import sys

import torch

# A tiny ViT: 64-d, 4 blocks, 4 heads, patch 8 (ViT-B/L/H are checked by building them elsewhere).
TINY = dict(embed_dim=64, depth=4, num_heads=4, patch_size=8)


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter non-trivial values (zero-initialised tables and unit layer scales hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module


def free_port() -> int:
    """A free TCP port on loopback for a torchrun master (tests launch several one after another)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_tool(args: list[str], cwd) -> subprocess.CompletedProcess:
    """Run one of the project's tools in a clean environment with its own torchrun port."""
    env = {
        'PATH': '/usr/bin:/bin',
        'PYTHON': sys.executable,
        'OMP_NUM_THREADS': '2',
        'PORT': str(free_port()),
    }
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
