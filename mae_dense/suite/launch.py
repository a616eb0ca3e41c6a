"""A pipeline stage as a command: ``python -m mae_dense.cli.*``, through torchrun or Slurm's ``srun``.

Stages run the package's own modules, never ``tools/*.py``, so an installed (non-editable) mae-dense runs
pipelines from any directory. Locally a cell gets its GPUs through ``CUDA_VISIBLE_DEVICES`` and, with more
than one, torchrun (``python -m torch.distributed.run``) with its own rendezvous port. With Slurm every
cell is its own job (:mod:`~.cluster`); inside it a multi-GPU stage is one ``srun`` step with the flags of
``tools/slurm_train.sh`` (one task per GPU; GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS from the config's
``slurm:`` or the environment) and mmengine's slurm launcher; a one-process stage runs in the job itself.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PipelineError

# the directory that holds the mae_dense package (a checkout, or site-packages when installed)
PACKAGE_PARENT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A free TCP port on this machine for a torchrun master (concurrent cells need one each)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def slurm_port(job_name: str) -> int:
    """A rendezvous port from the job name: jobs sharing a node need distinct ports (29500 + 0..9999)."""
    return 29500 + zlib.crc32(job_name.encode()) % 10000


@dataclass(frozen=True)
class Launcher:
    """Builds the command and environment of one stage for ``local`` or ``slurm`` runs.

    Args:
        kind: ``'local'`` or ``'slurm'``.
        python: the interpreter that runs the stages (``$PYTHON`` or the pipeline's own).
        slurm: the config's ``slurm:`` mapping (partition, job_name, gpus_per_node, cpus_per_task,
            srun_args); missing entries come from the environment as in ``tools/slurm_train.sh``.
    """

    kind: str = 'local'
    python: str = 'python'
    slurm: dict[str, Any] = field(default_factory=dict)

    def _slurm(self, key: str, env: str, default: Any) -> Any:
        value = self.slurm.get(key)
        return value if value not in (None, '') else os.environ.get(env, default)

    @property
    def gpus_per_node(self) -> int:
        """GPUs of one node (``slurm.gpus_per_node`` or ``GPUS_PER_NODE``, 8; 0: a cluster without GPUs)."""
        return int(self._slurm('gpus_per_node', 'GPUS_PER_NODE', 8))

    def step(self, gpus: int, per_node: int) -> list[str]:
        """``srun`` of a multi-process stage inside a cell's job: one task per GPU, the flags of
        ``tools/slurm_train.sh`` less those the job's allocation already fixed (partition, name, time);
        ``--overlap``: the step shares the allocation with the cell's own process, which waits on it."""
        tasks_per_node = min(gpus, per_node) if per_node else gpus
        return [
            'srun',
            '--overlap',
            f'--ntasks={gpus}',
            f'--ntasks-per-node={tasks_per_node}',
            *([f'--gres=gpu:{tasks_per_node}'] if per_node else []),
            f'--cpus-per-task={self._slurm("cpus_per_task", "CPUS_PER_TASK", 5)}',
            '--kill-on-bad-exit=1',
            *shlex.split(str(self._slurm('srun_args', 'SRUN_ARGS', ''))),
        ]

    def command(
        self, module: str, args: list[str], gpus: int, devices: list[str] | None, name: str, distributed: bool
    ) -> tuple[list[str], dict[str, str]]:
        """``(argv, environment)`` to run ``python -m module args`` on ``gpus`` GPUs.

        Args:
            module: e.g. ``'mae_dense.cli.train'``.
            args: the module's arguments (``--cfg-options ...`` last: it takes every value after it).
            gpus: processes / GPUs of the stage.
            devices: the local GPUs assigned to it (None: none known, e.g. a machine without GPU).
            name: a job name (Slurm) that also seeds the rendezvous port.
            distributed: the module takes ``--launcher`` (train/test); others run as one process.
        """
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(p for p in (str(PACKAGE_PARENT), env.get('PYTHONPATH')) if p)
        if self.kind == 'slurm' and distributed and gpus > 1:
            argv = [*self.step(gpus, per_node=self.gpus_per_node), self.python, '-u', '-m', module]
            env['MASTER_PORT'] = str(slurm_port(name))
            return [*argv, '--launcher', 'slurm', *args], env
        if self.kind == 'slurm':  # one process: it runs in the cell's job itself, on the job's GPU
            return [self.python, '-m', module, *args], env
        if devices:
            env['CUDA_VISIBLE_DEVICES'] = ','.join(devices)
        if distributed and gpus > 1:
            argv = [
                self.python,
                '-m',
                'torch.distributed.run',
                '--nnodes=1',
                f'--nproc_per_node={gpus}',
                '--master_addr=127.0.0.1',
                f'--master_port={free_port()}',
                '-m',
                module,
                '--launcher',
                'pytorch',
                *args,
            ]
        else:
            argv = [self.python, '-m', module, *args]
        return argv, env


def run_logged(argv: list[str], env: dict[str, str], log: Path, what: str) -> None:
    """Run ``argv`` with its output in ``log``; a failure raises one line: the stage's own ``error:`` line
    when it printed one, else the exit status, and where the log is."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open('w') as f:
        f.write('$ ' + shlex.join(argv) + '\n')
        f.flush()
        try:
            rc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
        except OSError as exc:
            raise PipelineError(f'{what}: cannot start {argv[0]} ({exc.strerror or exc})') from None
    if rc:
        errors = [line for line in log.read_text(errors='replace').splitlines() if line.startswith('error: ')]
        why = errors[-1][len('error: ') :] if errors else f'exit status {rc}'
        raise PipelineError(f'{what} failed: {why} (log: {log})')
