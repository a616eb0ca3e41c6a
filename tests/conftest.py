"""Shared fixtures; the helpers the tests import live in ``helpers.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault('OMP_NUM_THREADS', '2')
torch.set_num_threads(2)

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def fake_probe(monkeypatch):
    """Pipelines launch the stand-in probe (``tests/fake_probe.py``, ``module='fake_probe'``): no GPU list,
    no planted failure."""
    monkeypatch.setenv('PYTHONPATH', str(TESTS))
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    monkeypatch.delenv('FAKE_PROBE_FAIL', raising=False)
