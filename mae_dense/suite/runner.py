"""Running a suite: every cell of a :class:`SuiteSpec` over the visible GPUs, then the figures (on Slurm:
:class:`~.cluster.SlurmSuite`, every cell its own job).

Pretraining cells come first; a task cell of a pretrained backbone waits for its pretraining. Cells run
at the same time where GPUs allow (:func:`~.schedule.run_jobs`); a cell's failure is recorded with its
one-line reason and stops only the cells that depend on it.
"""

from __future__ import annotations

import os
import sys
import threading

from .cell import Cell, Context, PretrainCell
from .panels import draw_figures
from .preflight import preflight
from .schedule import Job, run_jobs, visible_devices
from .spec import SuiteSpec
from .task_cells import task_cells
from .weights import backbone_weights

__all__ = ['Suite', 'pipeline_cells']


def pipeline_cells(spec: SuiteSpec, ctx: Context) -> list[Cell]:
    """Pretraining stages first, then the cells task by task, seed by seed, backbone by backbone (a swept
    task: its points on the first seed, then a choosing cell per other seed)."""
    first = spec.seeds[0]
    cells: list[Cell] = [
        PretrainCell(backbone=b, seed=first, ctx=ctx) for b in spec.backbones if b.kind == 'pretrain'
    ]
    for task in spec.tasks:
        for seed in spec.seeds:
            for b in spec.backbones:
                cells += task_cells(b, task, seed, ctx)
    return cells


class Suite:
    """Runs a :class:`SuiteSpec`: its pretraining stages, every (backbone, task, seed) cell, the figures.

    Args:
        spec: the checked pipeline config.
        python: interpreter for the stages (default ``$PYTHON`` or this one).
    """

    def __init__(self, spec: SuiteSpec, python: str | None = None) -> None:
        self.spec = spec
        self.ctx = Context.of(spec, python or os.environ.get('PYTHON') or sys.executable)
        self.store = self.ctx.store

    def cells(self) -> list[Cell]:
        """Every cell of the pipeline (:func:`pipeline_cells`)."""
        return pipeline_cells(self.spec, self.ctx)

    def prepare(self) -> None:
        """Fetch and hash every given checkpoint before any cell runs (a bad URL stops here, in one line)."""
        for backbone in self.spec.backbones:
            if backbone.kind == 'checkpoint':
                backbone_weights(backbone, self.spec.work_dir)

    def run(self) -> dict[str, str | None]:
        """Check the data (the pre-flight), then run every cell; return each cell's failure reason (None:
        finished)."""
        preflight(self.spec)
        self.spec.work_dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        cells = {c.key: c for c in self.cells()}
        started: set[str] = set()
        lock = threading.Lock()

        def job(cell: Cell) -> Job:
            def run(devices):
                with lock:
                    started.add(cell.key)
                cell.run(devices)

            return Job(cell.key, cell.gpus, run, cell.after)

        devices = visible_devices()  # (launcher slurm: every cell its own job, see .cluster)
        where = f'GPUs {", ".join(devices)}' if devices else 'CPU, one at a time'
        print(f'[pipeline] {len(cells)} jobs on {where}; results store {self.spec.db}', flush=True)
        outcome = run_jobs([job(c) for c in cells.values()], devices)
        for key, reason in outcome.items():  # cells that never started (their pretraining failed) fail too
            if reason is not None and key not in started:
                cells[key].record(cells[key].placeholder(status='failed', reason=reason))
        return outcome

    def draw_figures(self) -> None:
        """The qualitative panels and MAE reconstructions of every backbone, into the results store."""
        draw_figures(self.spec, self.store)
