"""The suite on a Slurm cluster: every cell its own job, submitted through submitit; the pipeline command
submits and returns, and the same command run again shows, collects and resubmits.

``launcher: slurm`` in a pipeline config, with its ``slurm:`` keys::

    slurm:
      partition: gpu                # checked with sinfo before anything is submitted
      time: 2880                    # minutes per job (default 1440); a longer cell checkpoints and requeues
      gpus_per_node: 8              # one task per GPU; 0 on a cluster without GPUs
      cpus_per_task: 10             # also job_name (prefix), srun_args (of multi-GPU steps)
      account: my-account           # also qos, constraint, mem (e.g. 200G), gres (replaces gpu:N)
      sbatch: {exclude: node17}     # any other sbatch option
      shared_root: /shared          # the work dir must lie under it (the compute nodes see only it)

Each call of ``mae-dense pipeline FILE`` (:meth:`SlurmSuite.step`):

1. checks the cluster before submitting anything (``sbatch`` on PATH, the partition in ``sinfo``, the work
   dir under ``shared_root``): one line each;
2. reads every cell's state: ``queued``/``running`` from ``squeue`` (the job id is in the cell's
   ``<work_dir>/slurm/<cell>/job.json``), ``done``/``failed`` from what the job left in the cell's work dir
   (``record.json``, ``cell.json``); ``squeue`` needs no accounting database, unlike ``sacct``;
3. merges every ``record.json`` into the results store (the command is the store's only writer, so the
   store never sits on a network filesystem's broken locks);
4. submits the missing cells (failed ones with ``--retry-failed``), a cell of a pretrained backbone with
   ``afterok`` on its pretraining's job; a queued or running cell is never submitted again.

A job runs :class:`CellJob`, a ``submitit.helpers.Checkpointable``: on the preemption or time-limit signal
(submitit's, USR2 unless ``SUBMITIT_PREEMPT_SIGNAL`` says otherwise) submitit requeues the job, and the
requeued cell resumes from its work dir: finished steps are skipped and training resumes from the last
checkpoint (``--resume``), as after a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from ..errors import PipelineError
from .cell import Cell
from .launch import PACKAGE_PARENT
from .outputs import RECORD, CellState, read_record, write_json_atomic
from .runner import Suite

__all__ = ['CellJob', 'CellStatus', 'SlurmSuite']

DEFAULT_TIME_MIN = 1440  # a day: the usual cap of a cluster's partitions
# time limits a cell may reach and still requeue (submitit's default, 3, is 4 days of a 1-day partition: a
# 160k-iteration UperNet or a 1600-epoch pretraining takes more); preemptions do not count
MAX_TIMEOUTS = 30
_QUEUED = ('PENDING', 'REQUEUED', 'REQUEUE_HOLD', 'REQUEUE_FED', 'CONFIGURING', 'SUSPENDED', 'RESV_DEL_HOLD')
_RUNNING = ('RUNNING', 'COMPLETING', 'STAGE_OUT', 'SIGNALING', 'RESIZING')
_DEPENDENCY_FAILED = 'DependencyNeverSatisfied'


class CellJob(submitit.helpers.Checkpointable):
    """What a cell's job runs: the cell, from its work dir's progress. Requeued after a preemption or a
    time limit (submitit's ``checkpoint``: the same call again), it skips what is done and training
    resumes from its last checkpoint."""

    def __init__(self, cell: Cell) -> None:
        self.cell = cell

    def __call__(self) -> str:
        self.cell.run(None)
        return self.cell.key


@dataclass(frozen=True)
class CellStatus:
    """A cell's state in a cluster run: ``missing`` (never submitted), ``queued``, ``running``, ``done``,
    ``failed``; its job id and log, and a failure's one-line reason."""

    key: str
    state: str
    job_id: str | None = None
    log: str | None = None
    reason: str | None = None


def check_cluster(spec_slurm: dict[str, Any], work_dir: Path, partition: str) -> None:
    """One line before anything is submitted: no ``sbatch``, an unknown partition, or a work dir the
    compute nodes cannot see (outside ``shared_root``)."""
    for tool in ('sbatch', 'srun', 'squeue', 'sinfo'):
        if shutil.which(tool) is None:
            raise PipelineError(
                f'launcher slurm: {tool} not found on PATH (run the pipeline on a Slurm login node)'
            )
    root = spec_slurm.get('shared_root')
    if root is not None:
        shared, work = Path(str(root)).resolve(), work_dir.resolve()
        if not work.is_relative_to(shared):
            raise PipelineError(
                f'work_dir {work}: not under slurm.shared_root {shared}, so the compute nodes cannot see it'
            )
    r = subprocess.run(['sinfo', '-h', '-o', '%R'], capture_output=True, text=True, timeout=60)
    if r.returncode:
        raise PipelineError(f'launcher slurm: sinfo failed: {r.stderr.strip() or r.returncode}')
    known = sorted(set(r.stdout.split()))
    if partition not in known:
        raise PipelineError(
            f'slurm.partition {partition!r}: no such partition (sinfo lists {", ".join(known)})'
        )


@contextlib.contextmanager
def _one_submitter(path: Path) -> Iterator[None]:
    """Two pipeline commands on one work dir at once could both submit a missing cell: the second stops."""
    with path.open('w') as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineError(f'{path}: another pipeline command is submitting these cells now') from None
        yield


def live_jobs() -> dict[str, tuple[str, str]]:
    """``{job id: (state, reason)}`` of this user's jobs that Slurm still holds (queued or running)."""
    r = subprocess.run(['squeue', '--me', '-h', '-o', '%i|%T|%r'], capture_output=True, text=True, timeout=60)
    if r.returncode:
        raise PipelineError(f'launcher slurm: squeue failed: {r.stderr.strip() or r.returncode}')
    jobs = {}
    for line in r.stdout.splitlines():
        job_id, state, reason = (line.split('|') + ['', ''])[:3]
        jobs[job_id.strip()] = (state.strip(), reason.strip())
    return jobs


class SlurmSuite(Suite):
    """A :class:`Suite` whose cells are detached Slurm jobs (see the module's docstring)."""

    def __init__(self, spec, python: str | None = None) -> None:
        super().__init__(spec, python)
        self.submitted: list[str] = []  # this command's submissions and collected cells, for its summary
        self.collected: list[str] = []

    @property
    def partition(self) -> str:
        return str(self.spec.slurm.get('partition') or os.environ.get('PARTITION'))

    def job_dir(self, cell: Cell) -> Path:
        """submitit's folder of a cell (scripts, pickles, logs) and its ``job.json``: outside the cell's
        work dir, which a changed config moves aside."""
        return self.spec.work_dir / 'slurm' / cell.key.replace('/', '-')

    def status(self, cell: Cell, live: dict[str, tuple[str, str]]) -> CellStatus:
        """The cell's state from ``squeue`` while Slurm holds its job, else from what the job left."""
        job = self._job(cell)
        job_id, log = (job['job_id'], job['log']) if job else (None, None)
        if job_id in live:
            state, why = live[job_id]
            if why == _DEPENDENCY_FAILED:
                return CellStatus(cell.key, 'failed', job_id, log, f'{", ".join(cell.after)} failed')
            return CellStatus(cell.key, 'running' if state in _RUNNING else 'queued', job_id, log)
        record = read_record(cell.work)
        if record is not None:
            return CellStatus(cell.key, record['status'], job_id, log, record.get('reason'))
        if CellState(cell.work).done:
            return CellStatus(cell.key, 'done', job_id, log)
        if job is None:
            return CellStatus(cell.key, 'missing')
        why = f'job {job_id} ended without a result (log: {log})'
        return CellStatus(cell.key, 'failed', job_id, log, why)

    def _job(self, cell: Cell) -> dict[str, str] | None:
        path = self.job_dir(cell) / 'job.json'
        return json.loads(path.read_text()) if path.is_file() else None

    def collect(self, cells: list[Cell]) -> None:
        """Merge every cell's ``record.json`` into the store (the one writer; a record already there is
        not counted twice)."""
        for cell in cells:
            record = read_record(cell.work)
            if record is not None and self.store.add(record):
                self.collected.append(cell.key)

    def executor(self, cell: Cell, dependency: str | None) -> submitit.SlurmExecutor:
        """submitit's executor of one cell: its allocation (one task per GPU over as many nodes as it
        takes), the ``slurm:`` keys, and an environment where the job imports this mae_dense."""
        slurm = self.spec.slurm
        per_node = self.ctx.launcher.gpus_per_node
        nodes = -(-cell.gpus // per_node) if per_node else 1
        tasks = min(cell.gpus, per_node) if per_node else 1
        ex = submitit.SlurmExecutor(
            folder=self.job_dir(cell),
            max_num_timeout=MAX_TIMEOUTS,
            python=shlex.quote(self.ctx.launcher.python),
        )
        params: dict[str, Any] = dict(
            job_name=cell.job_name(*cell.name_parts),
            partition=self.partition,
            time=slurm.get('time', DEFAULT_TIME_MIN),
            nodes=nodes,
            ntasks_per_node=tasks,
            cpus_per_task=slurm.get('cpus_per_task', 5 if per_node else 1),
            stderr_to_stdout=True,
            # the cell's own process: one task, on the first node; its multi-GPU stages are srun steps
            srun_args=['--nodes=1', '--ntasks=1'],
            setup=[f'export PYTHONPATH={shlex.quote(str(PACKAGE_PARENT))}${{PYTHONPATH:+:$PYTHONPATH}}'],
            additional_parameters=dict(slurm.get('sbatch') or {}),
        )
        if slurm.get('gres'):
            params['gres'] = str(slurm['gres'])
        elif per_node:
            params['gpus_per_node'] = tasks
        params.update({k: str(slurm[k]) for k in ('account', 'qos', 'constraint', 'mem') if slurm.get(k)})
        if dependency:
            params['dependency'] = dependency
        ex.update_parameters(**params)
        return ex

    def submit(self, cell: Cell, dependency: str | None) -> CellStatus:
        """Submit one cell (its old ``record.json``, already merged, leaves the work dir first)."""
        (cell.work / RECORD).unlink(missing_ok=True)  # a retried cell keeps its finished steps
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # submitit prints sbatch's errors: one line here
                job = self.executor(cell, dependency).submit(CellJob(cell))
        except (submitit.core.utils.FailedJobError, subprocess.CalledProcessError, ValueError) as exc:
            lines = [line for line in str(exc).splitlines() if line.strip()]
            raise PipelineError(
                f'{cell.key}: sbatch refused the job: {lines[-1] if lines else exc}'
            ) from None
        log = str(job.paths.stdout)
        write_json_atomic(self.job_dir(cell) / 'job.json', dict(job_id=job.job_id, log=log, key=cell.key))
        self.submitted.append(job.job_id)
        return CellStatus(cell.key, 'queued', job.job_id, log)

    def step(self, retry_failed: bool) -> dict[str, CellStatus]:
        """One call of the pipeline command: states, collect, (re)submit; every cell's status."""
        check_cluster(self.spec.slurm, self.spec.work_dir, self.partition)
        (self.spec.work_dir / 'slurm').mkdir(parents=True, exist_ok=True)
        self.prepare()
        with _one_submitter(self.spec.work_dir / 'slurm' / '.lock'):
            return self._step(retry_failed)

    def _step(self, retry_failed: bool) -> dict[str, CellStatus]:
        cells = self.cells()
        live = live_jobs()
        out = {c.key: self.status(c, live) for c in cells}
        self.collect(cells)
        for cell in cells:  # pretraining first: its job id is the afterok of its fine-tunes
            st = out[cell.key]
            if st.state == 'failed' and st.job_id in live:  # waits on a failed pretraining forever
                subprocess.run(['scancel', st.job_id], capture_output=True, timeout=60)
            if st.state == 'missing' or (st.state == 'failed' and retry_failed):
                deps = [out[k] for k in cell.after]
                blocked = next((d for d in deps if d.state in ('failed', 'missing')), None)
                if blocked is not None:
                    out[cell.key] = CellStatus(
                        cell.key, 'failed', reason=f'{blocked.key} failed: {blocked.reason}'
                    )
                    continue
                waits = [d.job_id for d in deps if d.state in ('queued', 'running')]
                out[cell.key] = self.submit(cell, f'afterok:{":".join(waits)}' if waits else None)
        self._record_failures(cells, out)
        return out

    def _record_failures(self, cells: list[Cell], out: dict[str, CellStatus]) -> None:
        """Cells that failed without a record of their own (their job vanished, their pretraining failed)
        go into the store as failed, so the report shows them."""
        for cell in cells:
            st = out[cell.key]
            if st.state == 'failed' and read_record(cell.work) is None:
                cell_record = cell.placeholder(status='failed', reason=st.reason)
                self.store.add(dict(cell_record, pipeline=self.spec.source))

    def wait(self, retry_failed: bool, poll_s: float) -> dict[str, CellStatus]:
        """:meth:`step` until no cell is queued or running (``--wait``)."""
        while True:
            out = self.step(retry_failed)
            if not any(s.state in ('queued', 'running') for s in out.values()):
                return out
            time.sleep(poll_s)
            retry_failed = False  # a failure during the wait stays failed


def summary(suite: SlurmSuite, out: dict[str, CellStatus]) -> str:
    """One line: what this command submitted and collected, and how many cells are in each state."""
    counts: dict[str, int] = {}
    for st in out.values():
        counts[st.state] = counts.get(st.state, 0) + 1
    parts = [', '.join(f'{n} {state}' for state, n in counts.items())]
    if suite.submitted:
        parts.append(f'submitted {len(suite.submitted)} (jobs {", ".join(suite.submitted)})')
    if suite.collected:
        parts.append(f'collected {len(suite.collected)} into {suite.spec.db}')
    return '; '.join(parts)


def _shown(path: str | None) -> str:
    """A log path as short as it reads: relative to the current directory when under it."""
    if not path:
        return ''
    rel = os.path.relpath(path)
    return path if rel.startswith('..') else rel


def status_table(out: dict[str, CellStatus]) -> str:
    """The cells' states as aligned lines: key, state, job id, log or failure reason."""
    width = max(len(k) for k in out)
    lines = [f'{"cell":{width}}  {"state":8} {"job":>7}  log / reason']
    for st in out.values():
        tail = st.reason if st.state == 'failed' and st.reason else _shown(st.log)
        lines.append(f'{st.key:{width}}  {st.state:8} {st.job_id or "-":>7}  {tail}')
    return '\n'.join(lines)
