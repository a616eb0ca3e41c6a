"""Crash safety end to end: a pretraining, an ADE20K and a COCO run (1 process, and 2 gloo processes through
``tools/dist_train.sh``) are killed with SIGKILL at a random iteration, relaunched with the same command,
killed again in the middle of a checkpoint save, relaunched again, and must end with the weights of an
uninterrupted run (CPU, within 1e-6).

Kills come from ``sigkill_hooks.SigkillForTests`` inside the run (once each, by marker file); the iteration,
the process that dies, the save and the stage of the save it dies in (temporary file half written / new
checkpoint renamed into place / ``last_checkpoint`` updated) are drawn from an RNG seeded per case. Every
checkpoint is written every 2-3 iterations with ``max_keep_ckpts=1``, so mid-epoch resumes (pretraining),
a resume right after a validation (ADE20K) and the retirement of the only checkpoint are all exercised.
Loaders run with ``num_workers=0`` (the demo configs), where a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from helpers import assert_same_weights, config_with_hooks, log_text, model_state, run_tool

import mae_dense.openmmlab  # noqa: F401  (registries, loading policy)
from mae_dense.data import generate_synthetic_ade20k, generate_synthetic_coco, generate_synthetic_image_folder
from mae_dense.openmmlab.engine.checkpointing import choose_resume_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]  # the helpers the subprocesses import


@dataclass(frozen=True)
class Task:
    config: str
    iterations: Callable[[int], int]  # of the whole run, given the number of processes
    interval: int  # checkpoint interval in iterations
    options: Callable[[Path], list[str]]


def _pretrain_options(root: Path) -> list[str]:
    # 16 images, 4 per process: 4 iterations per epoch on 1 process, 2 on 2; checkpoints inside epochs
    return [
        f'train_dataloader.dataset.data_root={root}',
        'train_dataloader.batch_size=4',
        'train_cfg.max_epochs=3',
        'default_hooks.checkpoint.by_epoch=False',
        'default_hooks.checkpoint.interval=3',
        'default_hooks.checkpoint.max_keep_ckpts=1',
    ]


def _ade20k_options(root: Path) -> list[str]:
    # validation every 4 iterations, checkpoints every 2: a resume from iteration 4 follows a validation
    return [
        *(f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')),
        'train_dataloader.batch_size=2',
        'train_cfg.max_iters=6',
        'train_cfg.val_interval=4',
        'default_hooks.checkpoint.interval=2',
        'default_hooks.checkpoint.max_keep_ckpts=1',
        'randomness.seed=0',
    ]


def _coco_options(root: Path) -> list[str]:
    ann = root / 'annotations' / 'instances_val2017.json'
    return [
        *(f'{split}_dataloader.dataset.data_root={root}/' for split in ('train', 'val', 'test')),
        *(f'{split}_evaluator.ann_file={ann}' for split in ('val', 'test')),
        'train_dataloader.batch_size=2',
        'train_cfg.max_iters=6',
        'train_cfg.val_interval=6',
        'default_hooks.checkpoint.interval=2',
        'default_hooks.checkpoint.max_keep_ckpts=1',
        'randomness.seed=0',
    ]


TASKS = {
    'pretrain': Task(
        'configs/pretrain/mae_vit-tiny-p8_1xb16-amp-coslr-10e_synthetic.py',
        lambda n: 12 // n,
        3,
        _pretrain_options,
    ),
    'ade20k': Task('configs/demo/upernet_vit-tiny_synthetic_ade20k.py', lambda n: 6, 2, _ade20k_options),
    'coco': Task('configs/demo/mask-rcnn_vit-tiny_synthetic_coco.py', lambda n: 6, 2, _coco_options),
}


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp('crash_data')
    return dict(
        pretrain=generate_synthetic_image_folder(tmp / 'imgs', images_per_class=4, size=40),
        ade20k=generate_synthetic_ade20k(
            tmp / 'ade' / 'ADEChallengeData2016', num_train=4, num_val=2, seed=1
        ),
        coco=generate_synthetic_coco(tmp / 'coco', num_train=4, num_val=2, seed=0),
    )


def train(config: Path, work: Path, nproc: int, options: list[str]):
    """``tools/train.py CONFIG --resume`` (or ``sh tools/dist_train.sh CONFIG 2 --resume``) in a clean env."""
    if nproc == 1:
        cmd = [sys.executable, str(ROOT / 'tools/train.py'), str(config)]
    else:
        cmd = ['sh', str(ROOT / 'tools/dist_train.sh'), str(config), str(nproc)]
    cmd += ['--work-dir', str(work), '--resume', '--cfg-options', *options]
    # one thread per process: 2 processes share the 2 cores
    return run_tool(cmd, cwd=work.parent, PYTHONPATH=str(TESTS), OMP_NUM_THREADS=str(2 // nproc))


def final_weights(work: Path) -> tuple[str, dict[str, torch.Tensor]]:
    chosen, skipped = choose_resume_checkpoint(work)
    assert chosen is not None and not skipped, (chosen, skipped)
    return Path(chosen).name, model_state(chosen)


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, data) -> Callable[[str, int], tuple[str, dict[str, torch.Tensor]]]:
    """The final checkpoint's name and weights of the uninterrupted run of a task on n processes (run once)."""
    runs: dict[tuple[str, int], tuple[str, dict[str, torch.Tensor]]] = {}

    def get(task: str, nproc: int) -> tuple[str, dict[str, torch.Tensor]]:
        if (task, nproc) not in runs:
            spec, work = TASKS[task], tmp_path_factory.mktemp(f'straight_{task}_{nproc}')
            r = train(ROOT / spec.config, work / 'run', nproc, spec.options(data[task]))
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
            runs[task, nproc] = final_weights(work / 'run')
        return runs[task, nproc]

    return get


def step_of(path: str | None) -> int | None:
    """``.../iter_4.pth`` -> 4 (None for None)."""
    return None if path is None else int(Path(path).stem.rsplit('_', 1)[1])


# (task, processes, where the second kill lands in its save): each stage twice
CASES = [
    ('pretrain', 1, 'write'),
    ('pretrain', 2, 'publish'),
    ('ade20k', 1, 'rename'),
    ('ade20k', 2, 'write'),
    ('coco', 1, 'publish'),
    ('coco', 2, 'rename'),
]


@pytest.mark.slow
@pytest.mark.parametrize(('task', 'nproc', 'stage'), CASES)
def test_sigkill_twice_and_relaunch_ends_with_the_uninterrupted_weights(
    tmp_path, data, uninterrupted, task, nproc, stage
):
    spec = TASKS[task]
    config, options, iterations = ROOT / spec.config, spec.options(data[task]), spec.iterations(nproc)
    name, expected = uninterrupted(task, nproc)
    assert name in (f'iter_{iterations}.pth', f'epoch_{iterations}.pth')

    rng = random.Random(f'{task}-{nproc}')
    kill_at = rng.randint(spec.interval + 1, iterations - 1)  # after the first checkpoint
    save_at = rng.randint(kill_at, iterations)  # then during the first save of this iteration or later
    kills = [
        dict(
            marker=str(tmp_path / 'killed_at_iter'), at_iter=kill_at, rank=rng.randrange(nproc), save_delay=2
        ),
        dict(
            marker=str(tmp_path / 'killed_in_save'),
            at_iter=save_at,
            during_save=stage,
            fraction=rng.random(),
        ),
    ]
    killed = config_with_hooks(
        tmp_path, config, *(dict(type='SigkillForTests', **k) for k in kills), imports=('sigkill_hooks',)
    )
    work = tmp_path / 'crashed'
    # A rank killed before iteration kill_at: every save ends with a barrier, so whichever rank dies, the
    # last checkpoint before kill_at is on disk and named; the relaunch resumes from it. (Rank 0 takes 2 s
    # more over each save here: without the barrier, rank 1 would be killed while rank 0 still writes.)
    r = train(killed, work, nproc, options)
    assert r.returncode != 0 and (tmp_path / 'killed_at_iter').exists(), r.stdout[-3000:] + r.stderr[-3000:]
    chosen, skipped = choose_resume_checkpoint(work)
    assert (step_of(chosen), skipped) == ((kill_at - 1) // spec.interval * spec.interval, []), r.stdout[
        -3000:
    ]
    # Killed in the middle of a save: the previous checkpoint or the new one, whole, is named.
    r = train(killed, work, nproc, options)
    assert r.returncode != 0 and (tmp_path / 'killed_in_save').exists(), r.stdout[-3000:] + r.stderr[-3000:]
    chosen, skipped = choose_resume_checkpoint(work)
    assert chosen is not None and not skipped, (chosen, skipped)
    r = train(killed, work, nproc, options)  # the same command once more: runs to the end
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    log = log_text(work)
    assert f'restored the RNG states of {nproc} process(es)' in log
    if stage == 'write':
        assert 'removed 1 partial file(s) of an interrupted save' in log
    got_name, got = final_weights(work)
    assert got_name == name
    assert_same_weights(expected, got)


# (task, the checkpoint that rank 1 dies during): pretraining's first (nothing earlier: start afresh),
# ADE20K's second (resume from the first)
PEER_CASES = [('pretrain', 3), ('ade20k', 4)]


@pytest.mark.slow
@pytest.mark.parametrize(('task', 'save_at'), PEER_CASES)
def test_a_rank_killed_while_rank0_writes_loses_only_that_checkpoint(
    tmp_path, data, uninterrupted, task, save_at
):
    spec = TASKS[task]
    config, options = ROOT / spec.config, spec.options(data[task])
    assert save_at % spec.interval == 0
    hook = dict(type='SigkillForTests', marker=str(tmp_path / 'killed'), at_iter=save_at, during_save='write')
    killed = config_with_hooks(tmp_path, config, dict(hook, rank=1), imports=('sigkill_hooks',))
    work = tmp_path / 'crashed'
    r = train(killed, work, 2, options)
    assert r.returncode != 0 and (tmp_path / 'killed.writing').exists(), r.stdout[-3000:] + r.stderr[-3000:]
    partial = [p.name for p in work.iterdir() if p.name.endswith('.partial')]
    assert len(partial) == 1 and partial[0].startswith(f'.iter_{save_at}.pth.'), partial  # cut, not renamed
    chosen, skipped = choose_resume_checkpoint(work)
    previous = save_at - spec.interval or None
    assert (step_of(chosen), skipped) == (previous, []), (chosen, skipped)

    r = train(killed, work, 2, options)  # the same command: resumes from the previous one, or afresh
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = log_text(work)
    assert 'removed 1 partial file(s) of an interrupted save' in log
    assert not [p for p in work.iterdir() if p.name.endswith('.partial')]
    resumed = 'restored the RNG states of 2 process(es)' in log
    assert resumed == (previous is not None), log[-3000:]
    name, expected = uninterrupted(task, 2)
    got_name, got = final_weights(work)
    assert got_name == name
    assert_same_weights(expected, got)
