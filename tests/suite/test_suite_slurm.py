"""The suite on a real Slurm: a one-node cluster on localhost (``tests/slurm_cluster.py``), CPU only.

One pipeline of 2 backbones (a tiny MAE pretrained in its own job, and a random init) x 2 tasks (the tiny
ADE20K config for 2 iterations, and the stand-in probe): the command submits and returns; a second call
submits nothing twice; the pretraining job gets submitit's preemption signal while it trains, requeues
and ends with the weights of an uninterrupted run; a failing cell is shown failed with its one-line
reason while the others finish; ``--retry-failed`` submits only it again. Plus the one-line checks that
come before anything is submitted.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from helpers import assert_same_weights, config_with_hooks, model_state, probe_cfg, write_yaml

from mae_dense.suite.commands import pipeline_main

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[2]
ADE = 'configs/demo/upernet_vit-tiny_synthetic_ade20k.py'
MAE = 'configs/demo/mae_vit-tiny-p16_synthetic.py'
SHORT = {'train_cfg.max_iters': 2, 'train_cfg.val_interval': 2, 'default_hooks.checkpoint.interval': 2}
PAUSE_AT = 7  # the pretraining pauses before iteration 7 (of 8), after its checkpoint of iteration 6


def _pipeline(tmp_path: Path, work: str, launcher: str, tasks: bool = True) -> Path:
    """The test pipeline; ``work``: its work/results dir names (a reference run takes others)."""
    from mae_dense.data import generate_synthetic_ade20k, generate_synthetic_image_folder

    images = tmp_path / 'images'
    if not images.is_dir():
        generate_synthetic_image_folder(images, images_per_class=4, size=64)
        generate_synthetic_ade20k(tmp_path / 'ADEChallengeData2016', num_train=4, num_val=2, seed=3)
    hooked = config_with_hooks(
        tmp_path,
        ROOT / MAE,
        dict(type='PauseForTests', marker=str(tmp_path / 'paused'), at_iter=PAUSE_AT),
        imports=('sigkill_hooks',),
    )
    pretrain = {
        'train_dataloader.dataset.data_root': str(images),
        'train_dataloader.batch_size': 4,
        'train_cfg.max_epochs': 2,  # 16 images, 4 per batch: 8 iterations
        'default_hooks.checkpoint.by_epoch': False,
        'default_hooks.checkpoint.interval': 2,
    }
    ade = {
        f'{k}_dataloader.dataset.data_root': str(tmp_path / 'ADEChallengeData2016')
        for k in ('train', 'val', 'test')
    }
    cfg = dict(
        work_dir=str(tmp_path / f'{work}-work'),
        results_dir=str(tmp_path / f'{work}-results'),
        launcher=launcher,
        slurm=dict(partition='debug', gpus_per_node=0, time=30, job_name='t', shared_root=str(tmp_path)),
        qualitative=False,
        backbones=[
            dict(name='mae', pretrain=dict(config=str(hooked), cfg_options=pretrain)),
            dict(name='scratch', random=True),
        ],
    )
    if tasks:
        cfg['ade20k'] = dict(config=ADE, ms_flip=False, cfg_options={**ade, **SHORT})
        cfg['probe'] = dict(config=probe_cfg(tmp_path), module='fake_probe')
    return write_yaml(tmp_path / f'{work}.yaml', cfg)


def _jobs(work: Path) -> dict[str, str]:
    """Each cell's submitted job id (``<work_dir>/slurm/<cell>/job.json``)."""
    return {
        json.loads(f.read_text())['key']: json.loads(f.read_text())['job_id']
        for f in sorted((work / 'slurm').glob('*/job.json'))
    }


def _wait_for(ready, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert time.monotonic() < deadline, f'timed out waiting for {what}'
        time.sleep(0.5)


def _store(db: Path) -> dict[tuple[str, str], dict]:
    with sqlite3.connect(db) as con:
        con.row_factory = sqlite3.Row
        return {(r['backbone'], r['task']): dict(r) for r in con.execute('SELECT * FROM cells')}


@pytest.mark.slow
def test_cells_are_jobs_that_outlive_the_command_requeue_on_preemption_and_are_collected(
    tmp_path, slurm, fake_probe, monkeypatch, capsys
):
    path = _pipeline(tmp_path, 'cluster', 'slurm')
    work, results = tmp_path / 'cluster-work', tmp_path / 'cluster-results'
    monkeypatch.setenv('FAKE_PROBE_FAIL', 'None')  # the random backbone's probe fails (no pretrained file)
    started = time.monotonic()
    assert pipeline_main([str(path)]) == 0
    assert time.monotonic() - started < 30  # submitted, not run
    out = capsys.readouterr().out
    jobs = _jobs(work)
    keys = [
        'mae/pretrain',
        'mae/ade20k/seed0',
        'scratch/ade20k/seed0',
        'mae/probe/seed0',
        'scratch/probe/seed0',
    ]
    assert (
        sorted(jobs) == sorted(keys)
        and f'[pipeline] 5 queued; submitted 5 (jobs {", ".join(jobs[k] for k in keys)})' in out
    )
    script = (work / 'slurm/mae-ade20k-seed0' / f'{jobs["mae/ade20k/seed0"]}_submission.sh').read_text()
    assert f'#SBATCH --dependency=afterok:{jobs["mae/pretrain"]}' in script  # fine-tunes wait for it
    assert '#SBATCH --partition=debug' in script and '#SBATCH --time=30' in script

    # the pretraining pauses after its checkpoint of iteration 6: submitit's preemption signal, as Slurm
    # sends it to the job's steps before a preemption or a time limit
    _wait_for((tmp_path / 'paused').exists, 240, 'the pretraining to reach its pause')
    monkeypatch.delenv('FAKE_PROBE_FAIL')  # (the jobs have their environment: this only shows it is theirs)
    assert pipeline_main([str(path)]) == 0  # meanwhile: nothing is submitted twice
    again = capsys.readouterr().out
    assert _jobs(work) == jobs and 'mae/pretrain' in again and ' running ' in again
    slurm.run('scancel', '--signal=USR2', jobs['mae/pretrain'])
    show = ('scontrol', 'show', 'job', jobs['mae/pretrain'])
    _wait_for(
        lambda: {'Restarts=1', 'JobState=PENDING'} <= set(slurm.run(*show).split()), 120, 'the job to requeue'
    )
    # Slurm holds a requeued job for two minutes (BeginTime); a test need not wait for that
    slurm.run('scontrol', 'update', f'JobId={jobs["mae/pretrain"]}', 'StartTime=now')

    assert pipeline_main([str(path), '--wait', '--poll', '2']) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()[-1]
    assert err.startswith('error: 1 of 5 cells failed: scratch/probe/seed0 (probe failed: ')
    assert 'the fake probe refuses this backbone' in err and err.endswith(
        '(--retry-failed submits them again)'
    )
    table = {
        line.split()[0]: line.split()
        for line in captured.out.splitlines()
        if line.startswith(('mae/', 'scratch/'))
    }
    assert {k: v[1] for k, v in table.items()} == {
        k: 'failed' if k == 'scratch/probe/seed0' else 'done' for k in keys
    }
    assert table['mae/pretrain'][2] == jobs['mae/pretrain'] and 'probe failed:' in ' '.join(
        table['scratch/probe/seed0']
    )
    log = (work / 'slurm/mae-pretrain' / f'{jobs["mae/pretrain"]}_0_log.out').read_text()
    assert (
        'Caught signal SIGUSR2' in log
        and 'this job is preempted' in log
        and f'Requeued job {jobs["mae/pretrain"]}' in log
    )
    assert 'Job completed successfully' in log
    rows = _store(results / 'results.sqlite')
    assert {k: r['status'] for k, r in rows.items()} == {
        ('mae', 'pretrain'): 'done',
        ('mae', 'ade20k'): 'done',
        ('scratch', 'ade20k'): 'done',
        ('mae', 'probe'): 'done',
        ('scratch', 'probe'): 'failed',
    }
    assert 'the fake probe refuses this backbone' in rows[('scratch', 'probe')]['reason']
    assert json.loads(rows[('mae', 'ade20k')]['metrics'])['mIoU'] >= 0
    call = json.loads((work / 'mae/probe-seed0/probe/fake_probe_call.json').read_text())
    assert call['slurm_job_id'] == jobs['mae/probe/seed0']  # the stage ran inside the cell's job

    # the requeued pretraining resumed exactly: the weights of an uninterrupted run (the same cell, run
    # by the local launcher; the pause marker exists, so it does not pause)
    assert pipeline_main([str(_pipeline(tmp_path, 'local', 'local', tasks=False))]) == 0
    done = json.loads((work / 'mae/pretrain/cell.json').read_text())
    reference = json.loads((tmp_path / 'local-work/mae/pretrain/cell.json').read_text())
    assert Path(done['checkpoint']).name == Path(reference['checkpoint']).name == 'iter_8.pth'
    assert_same_weights(model_state(reference['checkpoint']), model_state(done['checkpoint']))

    # --retry-failed submits the failed cell only; the others keep their jobs
    capsys.readouterr()
    assert pipeline_main([str(path), '--retry-failed', '--wait', '--poll', '2']) == 0
    retried = _jobs(work)
    assert {k for k in keys if retried[k] != jobs[k]} == {'scratch/probe/seed0'}
    assert {r['status'] for r in _store(results / 'results.sqlite').values()} == {'done'}
    assert '| scratch |' in (results / 'leaderboard.md').read_text()


def test_bad_cluster_input_is_one_line_before_anything_is_submitted(
    tmp_path, slurm, fake_probe, monkeypatch, capsys
):
    weights = tmp_path / 'w.pth'
    weights.write_bytes(b'weights')

    def run(**slurm_keys) -> str:
        cfg = dict(
            work_dir=str(tmp_path / 'work'),
            results_dir=str(tmp_path / 'results'),
            launcher='slurm',
            slurm={'partition': 'debug', 'gpus_per_node': 0, **slurm_keys},
            backbones=[dict(name='mine', checkpoint=str(weights))],
            probe=dict(config=probe_cfg(tmp_path), module='fake_probe'),
        )
        assert pipeline_main([str(write_yaml(tmp_path / 'p.yaml', cfg))]) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1
        return lines[0]

    assert (
        run(partition='gpu-a100')
        == "error: slurm.partition 'gpu-a100': no such partition (sinfo lists debug)"
    )
    shared = tmp_path / 'shared'
    assert run(shared_root=str(shared)) == (
        f'error: work_dir {tmp_path / "work"}: not under slurm.shared_root {shared}, so the compute nodes '
        'cannot see it'
    )
    assert run(mem='9999G') == (  # what only sbatch can tell: its own reason, in the one line
        'error: mine/probe/seed0: sbatch refused the job: sbatch: error: Batch job submission failed: '
        'Requested node configuration is not available'
    )
    monkeypatch.setenv('PATH', str(tmp_path / 'empty-bin'))  # no Slurm clients here
    assert run() == 'error: launcher slurm: sbatch not found on PATH (run the pipeline on a Slurm login node)'
    assert not list(tmp_path.glob('work/slurm/*/job.json'))  # nothing was submitted


def test_a_multi_gpu_cell_is_one_job_with_one_task_per_gpu(tmp_path, monkeypatch):
    """The sbatch script submitit writes for a 16-GPU fine-tune on 8-GPU nodes (no cluster needed: submitit
    only looks for ``srun`` on PATH): 2 nodes x 8 tasks x 8 GPUs, the ``slurm:`` keys, submitit's
    preemption signal, ``afterok`` on the pretraining, and the cell's own process as one task."""
    from mae_dense.suite.cluster import SlurmSuite
    from mae_dense.suite.spec import parse_spec

    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'srun').write_text('#!/bin/sh\n')
    (bin_dir / 'srun').chmod(0o755)
    monkeypatch.setenv('PATH', f'{bin_dir}:{__import__("os").environ["PATH"]}')
    raw = dict(
        work_dir=str(tmp_path / 'work'),
        gpus=16,
        launcher='slurm',
        slurm=dict(
            partition='gpu',
            gpus_per_node=8,
            cpus_per_task=10,
            time=2880,
            account='acc',
            qos='high',
            constraint='a100',
            job_name='big',
            sbatch={'exclude': 'node17'},
        ),
        backbones=[dict(name='mae', pretrain=dict(config=MAE))],
        ade20k=dict(config=ADE),
    )
    suite = SlurmSuite(parse_spec(raw, 'p.yaml'))
    cell = next(c for c in suite.cells() if c.key == 'mae/ade20k/seed0')
    script = suite.executor(cell, 'afterok:41').parameters
    text = __import__('submitit').slurm.slurm._make_sbatch_string(command='CMD', folder=tmp_path, **script)
    flags = {line for line in text.splitlines() if line.startswith('#SBATCH')}
    assert {
        '#SBATCH --nodes=2',
        '#SBATCH --ntasks-per-node=8',
        '#SBATCH --gpus-per-node=8',
        '#SBATCH --cpus-per-task=10',
        '#SBATCH --time=2880',
        '#SBATCH --partition=gpu',
        '#SBATCH --account=acc',
        '#SBATCH --qos=high',
        '#SBATCH --constraint=a100',
        '#SBATCH --exclude=node17',
        '#SBATCH --dependency=afterok:41',
        '#SBATCH --job-name=big-mae-ade20k-s0',
        '#SBATCH --signal=USR2@90',
    } <= flags
    assert 'srun --unbuffered --output' in text and '--nodes=1 --ntasks=1 CMD' in text


def test_the_fine_tunes_of_a_failed_pretraining_fail_with_it(tmp_path, slurm, fake_probe, capsys):
    """Slurm keeps an ``afterok`` job whose dependency failed pending forever: the next call shows it
    failed with the pretraining's name, cancels it and records it."""
    cfg = dict(
        work_dir=str(tmp_path / 'work'),
        results_dir=str(tmp_path / 'results'),
        launcher='slurm',
        slurm=dict(partition='debug', gpus_per_node=0, time=10),
        backbones=[
            dict(
                name='mae',
                pretrain=dict(
                    config=MAE, cfg_options={'train_dataloader.dataset.data_root': str(tmp_path / 'none')}
                ),
            )
        ],
        probe=dict(config=probe_cfg(tmp_path), module='fake_probe'),
    )
    path = write_yaml(tmp_path / 'p.yaml', cfg)
    assert pipeline_main([str(path)]) == 0
    jobs = _jobs(tmp_path / 'work')
    assert pipeline_main([str(path), '--wait', '--poll', '2']) == 1
    out, err = capsys.readouterr()
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith('error: 2 of 2 cells failed: mae/pretrain (pretraining failed: ')
    )
    assert 'mae/probe/seed0 (mae/pretrain failed)' in err
    assert jobs['mae/probe/seed0'] not in slurm.run('squeue', '-h', '-o', '%i').split()  # cancelled
    rows = _store(tmp_path / 'results/results.sqlite')
    assert {k: r['status'] for k, r in rows.items()} == {
        ('mae', 'pretrain'): 'failed',
        ('mae', 'probe'): 'failed',
    }
    assert rows[('mae', 'probe')]['reason'] == 'mae/pretrain failed'
