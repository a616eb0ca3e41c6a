"""Scheduling cells over GPUs on CPU (fake GPU lists), and the stage commands inside a Slurm job."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from helpers import probe_cfg, write_yaml

from mae_dense.suite.commands import pipeline_main
from mae_dense.suite.launch import Launcher
from mae_dense.suite.schedule import Job, run_jobs, visible_devices


class _Tracker:
    """Records which devices each job held and checks that no device is held twice at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.busy: set[str] = set()
        self.assigned: dict[str, list[str] | None] = {}
        self.active = 0
        self.max_active = 0

    def job(
        self, key: str, gpus: int, barrier: threading.Barrier | None = None, fail: bool = False, after=()
    ):
        def run(devices):
            with self.lock:
                assert not (set(devices or ()) & self.busy), f'{key} got a busy device'
                self.busy |= set(devices or ())
                self.assigned[key] = devices
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            try:
                if barrier is not None:
                    barrier.wait()  # raises BrokenBarrierError if the others never start alongside
                if fail:
                    raise RuntimeError(f'{key} broke\nsecond line')
            finally:
                with self.lock:
                    self.busy -= set(devices or ())
                    self.active -= 1

        return Job(key, gpus, run, tuple(after))


def test_independent_jobs_share_the_gpus_concurrently():
    t = _Tracker()
    three = threading.Barrier(3, timeout=20)
    jobs = [t.job(f'probe{i}', 1, three) for i in range(3)] + [t.job('finetune', 2), t.job('probe3', 1)]
    outcome = run_jobs(jobs, ['0', '1', '2'])
    assert outcome == dict.fromkeys(outcome)  # all succeeded
    assert t.max_active == 3  # the three probes ran at the same time, one GPU each
    assert sorted(d for k in ('probe0', 'probe1', 'probe2') for d in t.assigned[k]) == ['0', '1', '2']
    assert len(t.assigned['finetune']) == 2


def test_failures_stay_in_their_cell_and_stop_only_dependents():
    t = _Tracker()
    jobs = [
        t.job('a/pretrain', 1, fail=True),
        t.job('b/ade20k', 1),
        t.job('a/ade20k', 1, after=['a/pretrain']),
        t.job('huge', 4),
    ]
    outcome = run_jobs(jobs, ['0', '1'])
    assert outcome['a/pretrain'] == 'RuntimeError: a/pretrain broke'  # one line
    assert outcome['a/ade20k'] == 'a/pretrain failed: RuntimeError: a/pretrain broke'
    assert outcome['huge'] == 'needs 4 GPUs, 2 visible (0, 1)'
    assert outcome['b/ade20k'] is None and 'a/ade20k' not in t.assigned


def test_without_gpus_one_job_at_a_time_and_slurm_all_at_once():
    t = _Tracker()
    run_jobs([t.job(f'j{i}', 2) for i in range(4)], [])
    assert t.max_active == 1 and all(v is None for v in t.assigned.values())
    t = _Tracker()
    four = threading.Barrier(4, timeout=20)
    run_jobs([t.job(f'j{i}', 8, four) for i in range(4)], None)  # Slurm queues them, not the pipeline
    assert t.max_active == 4


def test_visible_devices(monkeypatch):
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '3, 5,7')
    assert visible_devices() == ['3', '5', '7']
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')
    assert visible_devices() == []


def test_local_commands():
    launcher = Launcher('local', 'py')
    argv, env = launcher.command('mae_dense.cli.train', ['c.py', '--work-dir', 'w'], 2, ['4', '6'], 'n', True)
    assert argv[:3] == ['py', '-m', 'torch.distributed.run'] and '--nproc_per_node=2' in argv
    assert argv[-7:] == ['-m', 'mae_dense.cli.train', '--launcher', 'pytorch', 'c.py', '--work-dir', 'w']
    assert env['CUDA_VISIBLE_DEVICES'] == '4,6'
    argv, env = launcher.command('mae_dense.cli.probe', ['c.py'], 1, ['2'], 'n', False)
    assert argv == ['py', '-m', 'mae_dense.cli.probe', 'c.py'] and env['CUDA_VISIBLE_DEVICES'] == '2'


def test_slurm_steps_follow_slurm_train_sh(monkeypatch):
    """Inside a cell's job a multi-GPU stage is one srun step with tools/slurm_train.sh's flags, less those
    the job's allocation fixed; a one-process stage runs in the job itself."""
    monkeypatch.setenv('CPUS_PER_TASK', '7')  # tools/slurm_train.sh's variables fill what the config omits
    monkeypatch.setenv('SRUN_ARGS', '--mem-per-cpu=4G --mpi=none')
    launcher = Launcher('slurm', 'py', dict(partition='gpu', gpus_per_node=8))
    argv, env = launcher.command(
        'mae_dense.cli.train', ['c.py', '--resume'], 16, None, 'mae-dense-a-ade20k-s0', True
    )
    assert argv == [
        'srun',
        '--overlap',
        '--ntasks=16',
        '--ntasks-per-node=8',
        '--gres=gpu:8',
        '--cpus-per-task=7',
        '--kill-on-bad-exit=1',
        '--mem-per-cpu=4G',
        '--mpi=none',
        'py',
        '-u',
        '-m',
        'mae_dense.cli.train',
        '--launcher',
        'slurm',
        'c.py',
        '--resume',
    ]
    assert 29500 <= int(env['MASTER_PORT']) < 39500 and 'CUDA_VISIBLE_DEVICES' not in argv
    argv, _ = launcher.command('mae_dense.cli.probe', ['c.py'], 1, None, 'p', False)
    assert argv == ['py', '-m', 'mae_dense.cli.probe', 'c.py']
    argv, _ = launcher.command('mae_dense.cli.train', ['c.py'], 1, None, 'p', True)
    assert argv == ['py', '-m', 'mae_dense.cli.train', 'c.py']  # one GPU: no step, no launcher
    cpu = Launcher('slurm', 'py', dict(gpus_per_node=0))  # a cluster without GPUs asks for none
    assert not any(a.startswith('--gres') for a in cpu.command('m', [], 2, None, 'n', True)[0])


def _probe_pipeline(tmp_path: Path, **extra) -> Path:
    weights = [tmp_path / f'w{i}.pth' for i in range(2)]
    for i, w in enumerate(weights):
        w.write_bytes(bytes([i]) * 16)
    cfg = dict(
        work_dir=str(tmp_path / 'work'),
        results_dir=str(tmp_path / 'results'),
        backbones=[dict(name=f'b{i}', checkpoint=str(w)) for i, w in enumerate(weights)],
        probe=dict(config=probe_cfg(tmp_path), module='fake_probe'),
        **extra,
    )
    return write_yaml(tmp_path / 'p.yaml', cfg)


def _calls(tmp_path: Path) -> dict[str, dict]:
    return {
        f.parts[-4]: json.loads(f.read_text())
        for f in sorted((tmp_path / 'work').glob('*/*/probe/fake_probe_call.json'))
    }


def test_pipeline_runs_probes_concurrently_one_gpu_each(tmp_path, fake_probe, monkeypatch, capsys):
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '0,1')  # a fake two-GPU machine
    (tmp_path / 'barrier').mkdir()
    monkeypatch.setenv('FAKE_PROBE_BARRIER', f'{tmp_path / "barrier"}:2')  # each waits for the other
    assert pipeline_main([str(_probe_pipeline(tmp_path))]) == 0, capsys.readouterr().err
    calls = _calls(tmp_path)
    assert sorted(c['cuda_visible_devices'] for c in calls.values()) == ['0', '1']
    assert 'jobs on GPUs 0, 1' in capsys.readouterr().out
