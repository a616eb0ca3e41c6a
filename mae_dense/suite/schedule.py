"""Independent cells run at the same time over the visible GPUs; a cell's failure stops only its dependents.

The scheduler packs jobs onto devices greedily, in the order given: a job starts as soon as the jobs it
depends on have finished and enough devices are free. Jobs are threads that wait on their subprocesses, so
the pipeline itself stays one light process. Without GPUs (``devices=[]``) jobs run one at a time; with
Slurm (``devices=None``) every ready job is submitted at once and Slurm queues them.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import USER_ERRORS, exception_line


@dataclass(frozen=True)
class Job:
    """One unit of work.

    Args:
        key: unique name (also used in messages).
        gpus: devices it needs.
        run: called in a worker thread with the assigned device ids; raising fails the job.
        after: keys of the jobs that must succeed first.
    """

    key: str
    gpus: int
    run: Callable[[list[str] | None], None]
    after: tuple[str, ...] = ()


def visible_devices() -> list[str]:
    """The GPUs this machine offers: ``CUDA_VISIBLE_DEVICES`` when set, else every CUDA device."""
    env = os.environ.get('CUDA_VISIBLE_DEVICES')
    if env is not None:
        return [d.strip() for d in env.split(',') if d.strip() and d.strip() != '-1']
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def one_line_reason(exc: BaseException) -> str:
    """One line for any exception: the project's own message, else its type and first line."""
    return str(exc) if isinstance(exc, USER_ERRORS) else exception_line(exc)


def _unfinished(job: Job, outcome: dict[str, str | None]) -> list[str]:
    """The jobs ``job`` depends on that have not finished (or are not jobs at all)."""
    return [d for d in job.after if d not in outcome]


def _never_runs(job: Job, outcome: dict[str, str | None], devices: list[str] | None) -> str | None:
    """Why ``job`` will never run: a dependency failed, or (its dependencies done) it needs more GPUs than
    are visible; None otherwise."""
    failed_dep = next((d for d in job.after if outcome.get(d) is not None), None)
    if failed_dep is not None:
        return f'{failed_dep} failed: {outcome[failed_dep]}'
    if devices and job.gpus > len(devices) and not _unfinished(job, outcome):
        return f'needs {job.gpus} GPUs, {len(devices)} visible ({", ".join(devices)})'
    return None


def _take_devices(
    job: Job, devices: list[str] | None, free: list[str] | None, busy: bool
) -> tuple[list[str] | None, list[str] | None] | None:
    """(the devices ``job`` gets, those left free), or None while it must wait: too few GPUs free, or
    (no GPU) another job running. Unlimited devices (``free`` None): nothing assigned, nothing counted."""
    if free is None:
        return None, None
    if devices:
        if job.gpus > len(free):
            return None
        return free[: job.gpus], free[job.gpus :]
    return None if busy else (None, free)  # no GPU: one job at a time


def _work(job: Job, assigned: list[str] | None, finished: queue.Queue[tuple[str, str | None]]) -> None:
    """A worker thread: run ``job``, then put (its key, None or its one-line failure) on ``finished``."""
    try:
        job.run(assigned)
        finished.put((job.key, None))
    except BaseException as exc:  # noqa: BLE001 - every failure becomes the job's one-line reason
        finished.put((job.key, one_line_reason(exc)))


def _start_ready(
    pending: list[Job],
    running: dict[str, list[str] | None],
    outcome: dict[str, str | None],
    devices: list[str] | None,
    free: list[str] | None,
    finished: queue.Queue[tuple[str, str | None]],
) -> list[str] | None:
    """One pass over ``pending`` in order: settle the jobs that will never run, start those that can now;
    returns the devices still free."""
    for job in list(pending):
        reason = _never_runs(job, outcome, devices)
        if reason is not None:
            outcome[job.key] = reason
            pending.remove(job)
            continue
        taken = None if _unfinished(job, outcome) else _take_devices(job, devices, free, bool(running))
        if taken is None:
            continue
        assigned, free = taken
        pending.remove(job)
        running[job.key] = assigned
        threading.Thread(target=_work, args=(job, assigned, finished), name=job.key, daemon=True).start()
    return free


def run_jobs(jobs: list[Job], devices: list[str] | None) -> dict[str, str | None]:
    """Run ``jobs``; return each key's failure reason (None for success).

    Args:
        jobs: in priority order; ``after`` must name earlier jobs.
        devices: free GPU ids to share out (``[]``: none, one job at a time; None: unlimited, e.g. Slurm).
    """
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError('run_jobs: duplicate job keys')
    outcome: dict[str, str | None] = {}
    pending = list(jobs)
    free = list(devices) if devices is not None else None
    running: dict[str, list[str] | None] = {}
    finished: queue.Queue[tuple[str, str | None]] = queue.Queue()
    while pending or running:
        free = _start_ready(pending, running, outcome, devices, free, finished)
        if not running:
            for job in pending:  # nothing can start or finish: a dependency is not among the jobs
                outcome[job.key] = f'depends on {", ".join(_unfinished(job, outcome))}, not a job'
            pending.clear()
            continue
        key, reason = finished.get()
        outcome[key] = reason
        released = running.pop(key)
        if free is not None and released:
            free = [d for d in devices if d in free or d in released]  # keep the devices' order
    return {k: outcome[k] for k in keys}
