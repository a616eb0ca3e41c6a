"""Shared fixtures; the helpers the tests import live in ``helpers.py``."""

from __future__ import annotations

import os

import torch

os.environ.setdefault('OMP_NUM_THREADS', '2')
torch.set_num_threads(2)
