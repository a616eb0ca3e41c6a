"""Shared fixtures; the helpers the tests import live in ``helpers.py``."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault('OMP_NUM_THREADS', '2')
torch.set_num_threads(2)


@pytest.fixture
def seed() -> int:
    torch.manual_seed(0)
    return 0
