"""Shared fixtures; the helpers the tests import live in ``helpers.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault('OMP_NUM_THREADS', '2')
torch.set_num_threads(2)

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory) -> Path:
    """A synthetic image folder for tiny pretraining runs: 4 classes x 4 images of 40x40 (batch 4: 4
    iterations per epoch)."""
    from mae_dense.data import generate_synthetic_image_folder

    return generate_synthetic_image_folder(tmp_path_factory.mktemp('imgs'), images_per_class=4, size=40)


@pytest.fixture
def fake_probe(monkeypatch):
    """Pipelines launch the stand-in probe (``tests/fake_probe.py``, ``module='fake_probe'``): no GPU list,
    no planted failure."""
    monkeypatch.setenv('PYTHONPATH', str(TESTS))
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    monkeypatch.delenv('FAKE_PROBE_FAIL', raising=False)
