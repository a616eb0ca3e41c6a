"""Pretraining on several processes (gloo on CPU): 2 processes equal 1 process with the double batch, and
``tools/dist_train.sh`` end to end (rank 0 alone logs and writes; per-rank RNG states; resume).

Run as a script by torchrun (``python -m torch.distributed.run --nproc_per_node 2 THIS_FILE OUT``), this file
is the worker of the first test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY_MAE, TINY_MAE_CONFIG, free_port, log_text

ROOT = Path(__file__).resolve().parents[2]


def _model():
    from mae_dense.openmmlab.pretrain import MAEPretrainer

    torch.manual_seed(0)
    return MAEPretrainer(arch=None, **TINY_MAE, norm_pix_loss=True)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """4 uint8 images and fixed masking noise (16 patches of the 32-px tiny model)."""
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (4, 3, 32, 32), generator=g, dtype=torch.uint8), torch.rand(
        4, 16, generator=g
    )


def _worker(out: str) -> None:
    import torch.distributed as dist

    import mae_dense.openmmlab  # noqa: F401
    from mae_dense.openmmlab.engine.fallbacks import MMDistributedDataParallelCPU
    from mae_dense.openmmlab.pretrain.optim import all_ranks_finite

    torch.set_num_threads(1)
    dist.init_process_group('gloo')
    rank, world = dist.get_rank(), dist.get_world_size()
    model = _model()
    ddp = MMDistributedDataParallelCPU(module=model)  # what tools/train.py wraps with on CPU
    imgs, noise = _batch()
    half = slice(2 * rank, 2 * rank + 2)  # each process its half of the batch and of the masks
    data = model.data_preprocessor(dict(inputs=imgs[half]), training=True)
    loss = ddp(**data, mode='loss', noise=noise[half])['loss']
    loss.backward()  # DDP averages the gradients over the processes
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    flags = [
        all_ranks_finite(torch.tensor(1.0)),
        all_ranks_finite(torch.tensor(float('nan') if rank else 1.0)),
    ]
    if rank == 0:
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        torch.save(dict(loss=mean_loss / world, grads=grads, flags=flags), out)
    dist.destroy_process_group()


def _env(**extra: str) -> dict[str, str]:
    # PYTHONPATH: this file, run as torchrun's worker, imports the tests' helpers one folder up
    tests = str(Path(__file__).resolve().parents[1])
    return {
        'PATH': os.environ.get('PATH', '/usr/bin:/bin'),
        'OMP_NUM_THREADS': '1',
        'PYTHONPATH': tests,
        **extra,
    }


def test_two_gloo_processes_equal_one_process_with_double_batch(tmp_path):
    out = tmp_path / 'dist.pt'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2']
    cmd += ['--master_port', str(free_port()), __file__, str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    got = torch.load(out, weights_only=True)

    model = _model()
    imgs, noise = _batch()
    data = model.data_preprocessor(dict(inputs=imgs), training=True)
    loss = model(**data, mode='loss', noise=noise)['loss']
    loss.backward()
    # every image has the same number of masked patches, so the mean of the halves is the whole's mean
    torch.testing.assert_close(got['loss'], loss.detach(), rtol=1e-5, atol=1e-6)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got['grads'].keys() == grads.keys() and len(grads) > 30
    for name, grad in grads.items():
        torch.testing.assert_close(got['grads'][name], grad, rtol=1e-5, atol=1e-5, msg=name)
    assert got['flags'] == [True, False]  # one process's NaN makes every process skip


@pytest.mark.slow
def test_dist_train_sh_two_processes_rank0_writes_and_resumes(tmp_path):
    from mae_dense.checkpoint import load_file
    from mae_dense.data import generate_synthetic_image_folder

    data = generate_synthetic_image_folder(tmp_path / 'data', images_per_class=2, size=40)  # 8 images
    work = tmp_path / 'work'
    opts = [
        f'train_dataloader.dataset.data_root={data}',
        'train_dataloader.batch_size=2',  # x 2 processes: 2 iterations per epoch
        'default_hooks.checkpoint.interval=1',
        'default_hooks.checkpoint.max_keep_ckpts=3',
    ]

    def run(epochs: int, *extra: str) -> subprocess.CompletedProcess:
        cmd = [
            'sh',
            str(ROOT / 'tools/dist_train.sh'),
            str(TINY_MAE_CONFIG),
            '2',
            '--work-dir',
            str(work),
            *extra,
        ]
        cmd += ['--cfg-options', *opts, f'train_cfg.max_epochs={epochs}']
        env = _env(PORT=str(free_port()), PYTHON=sys.executable)
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r

    run(2)
    logs = list(work.glob('*/*.log'))
    assert len(logs) == 1  # rank 0 only
    log = logs[0].read_text()
    assert 'effective batch 4 = 2 per process x 1 accumulation steps x 2 processes' in log
    ckpt = load_file(work / 'epoch_2.pth')
    assert len(ckpt['rng_states']) == 2  # one per process
    assert not torch.equal(ckpt['rng_states'][0]['torch'], ckpt['rng_states'][1]['torch'])  # seed + rank

    run(3, '--resume')  # continue to epoch 3 from epoch_2.pth, both processes with their own RNG states
    assert load_file(work / 'epoch_3.pth')['meta']['epoch'] == 3
    assert 'restored the RNG states of 2 process(es)' in log_text(work)


if __name__ == '__main__':
    sys.path.insert(0, str(ROOT))
    _worker(sys.argv[1])
