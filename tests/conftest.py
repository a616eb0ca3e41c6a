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


@pytest.fixture(scope='session')
def slurm_cluster():
    """A one-node Slurm cluster on localhost (``tests/slurm_cluster.py``), started once per session and
    stopped at its end (daemons an earlier session left running are reused, not stopped). Skipped, with
    the reason, only where slurm-wlm/munge are missing and apt cannot install them (not root, no apt)."""
    import tempfile

    from slurm_cluster import start_cluster, unavailable

    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    cluster = start_cluster(Path(tempfile.gettempdir()) / 'mae-dense-slurm')
    yield cluster
    cluster.stop()


@pytest.fixture
def slurm(slurm_cluster, monkeypatch):
    """The test cluster as this test's Slurm: its ``SLURM_CONF`` in the environment (the pipeline's sbatch,
    squeue and sinfo, and the jobs, which inherit it); one thread per job on its 2 CPUs."""
    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    return slurm_cluster
