"""What a cell's stages leave on disk, read back: its progress file, checkpoints, test metrics, curves.

A cell keeps its progress in ``cell.json`` (:class:`CellState`) and reads each stage's outputs from the
files mmengine and the tools write: ``last_checkpoint``, ``metrics_*.json``, ``vis_data/scalars.json`` and
the probe's ``probe_result.json``; :func:`task_metrics` turns them into leaderboard numbers through the
table of tasks.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..config_files import PROBE_MODES
from ..errors import PipelineError
from .tasks import Task

__all__ = [
    'RECORD',
    'CellState',
    'read_record',
    'write_record',
    'last_checkpoint',
    'options_argv',
    'read_curves',
    'read_probe_result',
    'task_metrics',
    'test_metrics',
]


def options_argv(options: dict[str, Any]) -> list[str]:
    """``--cfg-options k=v ...`` (last on a command line: it takes every value after it)."""
    return ['--cfg-options', *(f'{k}={v}' for k, v in options.items())] if options else []


def read_curves(train_dir: Path, task: Task | None = None) -> dict[str, list]:
    """Training loss and the task's validation metrics at their iterations from mmengine's ``scalars.json``.

    Returns:
        ``{'loss': [[step, loss], ...], '<metric>': [[step, points], ...]}``, in the order the runs wrote
        them (a resumed run adds a new timestamped directory).
    """
    curves: dict[str, list] = {}
    kept = task.curves if task else {}
    for f in sorted(train_dir.glob('*/vis_data/scalars.json')):
        for line in f.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            step = row.get('step')
            if step is None:
                continue
            if 'loss' in row:
                curves.setdefault('loss', []).append([step, row['loss']])
            for key, (name, scale) in kept.items():
                if key in row:
                    curves.setdefault(name, []).append([step, scale * row[key]])
    return curves


def last_checkpoint(work: Path) -> str:
    marker = work / 'last_checkpoint'
    if not marker.is_file():
        raise PipelineError(f'{work}: training wrote no checkpoint (no last_checkpoint file)')
    return marker.read_text().strip()


def test_metrics(work: Path) -> dict[str, Any]:
    files = sorted(work.rglob('metrics_*.json'))
    if not files:
        raise PipelineError(f'{work}: the test wrote no metrics file')
    return json.loads(files[-1].read_text())['metrics']


def task_metrics(task: Task, steps: dict[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """A cell's leaderboard metrics in points, and the reason for each expected metric that is missing
    (a metric whose step did not run, e.g. ms+flip switched off, is neither)."""
    what = {t.step: t.what for t in task.tests} | {'probe': 'probe'}
    metrics: dict[str, float] = {}
    missing: dict[str, str] = {}
    for metric in task.metrics:
        if metric.step not in steps:
            continue
        value = metric.read(steps)
        if isinstance(value, (int, float)) and math.isfinite(value):
            metrics[metric.name] = metric.scale * float(value)
        else:
            shown = f' ({value!r})' if value is not None else ''
            missing[metric.name] = f'the {what[metric.step]} returned no {metric.key.split(".")[-1]}{shown}'
    return metrics, missing


def read_probe_result(work: Path) -> dict[str, Any]:
    """``probe_result.json`` as the probe command writes it, checked: metrics in points, mode, lr, sweep."""
    path = work / 'probe_result.json'
    if not path.is_file():
        raise PipelineError(f'{work}: the probe wrote no probe_result.json')
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PipelineError(f'{path}: not valid JSON ({exc})') from None
    if not isinstance(result, dict) or not isinstance(result.get('metrics'), dict):
        raise PipelineError(f'{path}: expected {{"metrics": {{"mIoU": ...}}, "mode": ..., "lr": ...}}')
    if result.get('mode') not in PROBE_MODES:
        modes = ' or '.join(PROBE_MODES)
        raise PipelineError(f'{path}: mode must be {modes}, got {result.get("mode")!r}')
    return result


class CellState:
    """A cell's progress file: status (running/done/failed), finished steps, failure reason."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / 'cell.json'
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.data.setdefault('steps', {})

    @property
    def done(self) -> bool:
        return self.data.get('status') == 'done'

    def stale(self, identity: dict[str, str]) -> bool:
        """True when this directory holds a run of other weights or another config (not to be resumed)."""
        return self.data.get('identity') not in (None, identity)

    @property
    def steps(self) -> dict[str, Any]:
        return self.data['steps']

    def step(self, name: str, value: Any) -> None:
        """Record a finished step (its output) and save."""
        self.data['steps'][name] = value
        self.save()

    def save(self, **fields: Any) -> None:
        self.data.update(fields)
        write_json_atomic(self.path, self.data)


RECORD = 'record.json'  # a cell's results-store row, written by a cluster job into its own work dir


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as JSON at ``path``, all or nothing: a kill (or a reader on another machine) never sees
    half a file, since the rename is atomic on POSIX filesystems, NFS and Lustre included."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def write_record(work: Path, record: dict[str, Any]) -> None:
    """A cell's store row as ``<work>/record.json``: on a cluster only the pipeline command writes the
    store (one writer), merging these files (:func:`read_record`)."""
    write_json_atomic(work / RECORD, record)


def read_record(work: Path) -> dict[str, Any] | None:
    """The row a cell's job left in ``work`` (None: none yet)."""
    path = work / RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PipelineError(f'{path}: not valid JSON ({exc})') from None
