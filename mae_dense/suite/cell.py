"""A cell of the suite: one backbone's pretraining stage, or one (backbone, task, seed) run, as an object.

A cell is plain data (its backbone, task, seed and the pipeline's :class:`Context`) that can be pickled and
run anywhere the work dir is visible: ``cell.run(devices)``. It keeps its progress in
``<work_dir>/<backbone>/<stage>/cell.json`` (train -> tests -> qualitative predictions, or the probe), so a
relaunch continues where it stopped and skips finished steps; a cell already in the results store (same
weights, config hash and seed) is not run again. A failing cell records its one-line reason and raises.

* :class:`PretrainCell`: trains an MAE; its last checkpoint becomes the backbone's weights.
* :class:`TaskCell`: one (backbone, task, seed) run; its two kinds (fine-tune, probe) are in
  :mod:`.task_cells`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..checkpoint import file_sha256
from .backbones import BackboneSpec
from .cards import card_of
from .launch import Launcher, run_logged
from .outputs import (
    CellState,
    last_checkpoint,
    options_argv,
    read_curves,
    task_metrics,
    write_record,
)
from .recipe import RunConfig, git_commit, trained_lr
from .schedule import one_line_reason
from .spec import SuiteSpec, TaskSpec
from .store import ResultStore, now
from .sweeps import Point, point_label, resolve_point
from .tables import UNKNOWN
from .tasks import placement_fit
from .weights import KEEP, backbone_weights, stage_dir

__all__ = [
    'Cell',
    'Context',
    'PretrainCell',
    'TaskCell',
    'backbone_weights',
]

Devices = list[str] | None  # the GPUs a job was given (None: none known, or Slurm's)


# ------------------------------------------------------------------------------------------------ cells
@dataclass(frozen=True)
class Context:
    """What every cell of a pipeline shares: plain data, so that a cell can be pickled and run elsewhere."""

    source: str  # the pipeline config (recorded with every result)
    work_dir: Path
    db: Path  # the results store
    launcher: Launcher
    job_prefix: str
    first_seed: int
    qualitative_images: int
    records: bool = False  # a cluster job: write record.json in the work dir, the pipeline merges it

    @property
    def store(self) -> ResultStore:
        return ResultStore(self.db)

    @classmethod
    def of(cls, spec: SuiteSpec, python: str) -> Context:
        return cls(
            source=spec.source,
            work_dir=spec.work_dir,
            db=spec.db,
            launcher=Launcher(spec.launcher, python, spec.slurm),
            job_prefix=spec.slurm.get('job_name') or 'mae-dense',
            first_seed=spec.seeds[0],
            qualitative_images=spec.qualitative_images,
            records=spec.launcher == 'slurm',
        )


@dataclass(frozen=True)
class Cell:
    """One unit of the suite: its key, work dir, the record it adds to the store, and :meth:`run`."""

    backbone: BackboneSpec
    seed: int
    ctx: Context
    stage: ClassVar[str]
    task_name: ClassVar[str]

    @property
    def key(self) -> str:
        raise NotImplementedError

    @property
    def work(self) -> Path:
        return stage_dir(self.ctx.work_dir, self.backbone, self.stage)

    @property
    def gpus(self) -> int:
        raise NotImplementedError

    @property
    def after(self) -> tuple[str, ...]:
        """The keys of the cells that must finish first."""
        return ()

    def placeholder(self, **fields: Any) -> dict[str, Any]:
        """The record's identity before the weights and config are known (``unknown`` placeholders, which
        the report files under the backbone and task), with ``fields``."""
        return dict(
            backbone=self.backbone.name,
            checkpoint_sha256=f'{UNKNOWN}:{self.backbone.name}',
            task=self.task_name,
            config_hash=UNKNOWN,
            seed=self.seed,
            **fields,
        )

    def log(self, msg: str) -> None:
        print(f'[pipeline] {self.key}: {msg}', flush=True)

    def job_name(self, *parts: Any) -> str:
        return '-'.join([self.ctx.job_prefix, self.backbone.name, *map(str, parts)])

    def launch(self, module: str, args: list[str], gpus: int, devices: Devices, log: Path, what: str) -> None:
        """Run one stage command (``python -m module args``) on ``gpus`` GPUs, its output in ``log``."""
        distributed = module in ('mae_dense.cli.train', 'mae_dense.cli.test')
        argv, env = self.ctx.launcher.command(
            module, args, gpus, devices, self.job_name(*self.name_parts), distributed
        )
        self.log(' '.join(argv))
        run_logged(argv, env, log, what)

    @property
    def name_parts(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def state(self, identity: dict[str, Any]) -> CellState:
        """The progress of the work dir if it belongs to ``identity``; else the old run is moved aside
        (never resumed with other weights or another config) and the cell starts afresh."""
        state = CellState(self.work)
        if state.stale(identity):
            aside = self.work.with_name(f'{self.work.name}.stale-{time.strftime("%Y%m%d-%H%M%S")}')
            self.work.rename(aside)
            self.log(f'the weights or the config changed since the last run: old run moved to {aside}')
            state = CellState(self.work)
        state.data['identity'] = identity
        return state

    def record(self, record: dict[str, Any], commit: str | None = None) -> None:
        """Add ``record`` to the results store (a cluster job: to its ``record.json``, which the pipeline
        command merges); ``commit``: :func:`git_commit` if known already."""
        record = dict(git_commit=commit or git_commit(), pipeline=self.ctx.source, date=now(), **record)
        if self.ctx.records:
            write_record(self.work, record)
            return
        added = self.ctx.store.add(record)
        if not added and record['status'] == 'done':
            self.log('already in the results store (same checkpoint, config and seed): not counted twice')

    def run(self, devices: Devices) -> None:
        """Run the cell (skipping what is done); on failure record the one-line reason and raise."""
        fields = self.placeholder(config=self.config, work_dir=str(self.work), **self.extra_fields)
        holder = [CellState(self.work)]  # the state a failure is saved in (:meth:`state` may start afresh)
        try:
            self._run(devices, fields, holder)
        except Exception as exc:
            reason = one_line_reason(exc)
            holder[0].save(status='failed', reason=reason)
            self.record(dict(fields, status='failed', reason=reason))
            self.log(f'FAILED: {reason}')
            raise

    @property
    def config(self) -> str:
        raise NotImplementedError

    @property
    def extra_fields(self) -> dict[str, Any]:
        return {}

    def _run(self, devices: Devices, fields: dict[str, Any], holder: list[CellState]) -> None:
        """The work; fills ``fields`` as it learns them and ``holder`` with its progress state."""
        raise NotImplementedError


@dataclass(frozen=True)
class PretrainCell(Cell):
    """An MAE pretraining stage: its last checkpoint becomes the backbone's weights (first seed only)."""

    stage: ClassVar[str] = 'pretrain'
    task_name: ClassVar[str] = 'pretrain'

    @property
    def key(self) -> str:
        return f'{self.backbone.name}/pretrain'

    @property
    def gpus(self) -> int:
        return self.backbone.pretrain.gpus

    @property
    def config(self) -> str:
        return self.backbone.pretrain.config

    @property
    def name_parts(self) -> tuple[Any, ...]:
        return ('pretrain',)

    def _run(self, devices: Devices, fields: dict[str, Any], holder: list[CellState]) -> None:
        spec, work = self.backbone.pretrain, self.work
        options = {**spec.cfg_options, 'randomness.seed': self.seed}
        run = RunConfig.read(spec.config, options)
        state = holder[0] = self.state({'config_hash': run.hash, 'seed': self.seed})
        if state.done:
            self.log(f'done, skipped ({state.data["checkpoint"]})')
            return
        commit = git_commit()
        recipe = run.recipe(spec.gpus, self.seed, commit)
        fields.update(config_hash=run.hash, model=recipe['model'])
        state.save(status='running')
        args = [spec.config, '--work-dir', str(work / 'train'), '--resume', *options_argv(options)]
        self.launch('mae_dense.cli.train', args, spec.gpus, devices, work / 'train.log', 'pretraining')
        ckpt = last_checkpoint(work / 'train')
        recipe['lr'] = trained_lr(ckpt)
        sha = file_sha256(ckpt)
        curves = read_curves(work / 'train')
        metrics = {'final loss': curves['loss'][-1][1]} if curves.get('loss') else {}
        record = dict(fields, checkpoint_sha256=sha, checkpoint=ckpt, status='done', metrics=metrics)
        self.record(dict(record, recipe=recipe, curves=curves, versions=recipe['versions']), commit)
        state.save(status='done', checkpoint=ckpt, checkpoint_sha256=sha)


@dataclass(frozen=True)
class TaskCell(Cell):
    """One (backbone, task, seed) run: its weights and config, the store check, the steps, the record.

    A swept task (``sweep:`` in its entry) has a cell per ``point`` on the first seed, and on every other
    seed a cell whose ``choose`` lists the points: it depends on their cells and, when it starts, takes the
    best point from the store (:func:`~.sweeps.best_point`).
    """

    task: TaskSpec | None = None
    task_name: ClassVar[str] = ''
    point: Point = ()
    choose: tuple[Point, ...] = ()

    @property
    def stage(self) -> str:  # type: ignore[override]
        return f'{self.task.label}-seed{self.seed}' + (f'-{point_label(self.point)}' if self.point else '')

    def placeholder(self, **fields: Any) -> dict[str, Any]:
        return dict(super().placeholder(**fields), task=self.task.name)

    @property
    def key(self) -> str:
        base = f'{self.backbone.name}/{self.task.label}/seed{self.seed}'
        return f'{base}/{point_label(self.point)}' if self.point else base

    @property
    def gpus(self) -> int:
        return self.task.gpus

    @property
    def config(self) -> str:
        return self.task.config

    @property
    def after(self) -> tuple[str, ...]:
        first = f'{self.backbone.name}/{self.task.label}/seed{self.ctx.first_seed}'
        points = tuple(f'{first}/{point_label(p)}' for p in self.choose)
        return ((f'{self.backbone.name}/pretrain',) if self.backbone.kind == 'pretrain' else ()) + points

    @property
    def extra_fields(self) -> dict[str, Any]:
        return dict(mode=self.task.mode)

    @property
    def name_parts(self) -> tuple[Any, ...]:
        return (self.task.label, f's{self.seed}')

    def _run(self, devices: Devices, fields: dict[str, Any], holder: list[CellState]) -> None:
        task = self.task
        pretrained, identity = backbone_weights(self.backbone, self.ctx.work_dir, task)
        fields['checkpoint_sha256'] = identity
        options = {**task.cfg_options, 'randomness.seed': self.seed}
        if pretrained != KEEP:
            options[task.task.weights_key] = pretrained
        extra = {'mode': task.mode} if task.task.kind == 'probe' else None
        sweep = resolve_point(self, options, identity, extra) if task.sweep else None
        b = self.backbone
        run = RunConfig.read(
            task.config, options, extra, placement_fit(task.task, b.arch, b.timm, b.timm_kwargs)
        )
        fields['config_hash'] = run.hash
        fields['card'] = card_of(task.task, run.cfg, self.backbone, task.mode, sweep)
        fields['checkpoint'] = None if pretrained in (None, KEEP) else pretrained
        state = holder[0] = self.state({k: fields[k] for k in ('checkpoint_sha256', 'config_hash')})
        if state.done:
            self.log('done, skipped')
            return
        # (a cluster job never opens the store, which may not be on its machine: its record is merged)
        stored = None if self.ctx.records else self.ctx.store.find(identity, task.name, run.hash, self.seed)
        if stored is not None:
            self.log(f'already in the results store ({stored["date"]}, {stored["pipeline"]}): not run again')
            state.save(status='done', from_store=True)
            return
        state.save(status='running')
        commit = git_commit()
        record = self.steps(run, run.options, devices, state, commit)
        if record['recipe'].get('lr') is not None:  # the lr the built optimizer (or the probe) really had
            fields['card'] = dict(fields['card'], lr=record['recipe']['lr'])
        metrics, missing = task_metrics(task.task, state.steps)
        self.record(dict(fields, status='done', metrics=metrics, missing=missing, **record), commit)
        state.save(status='done')
        shown = ', '.join(f'{k} {v:.2f}' for k, v in metrics.items())
        self.log(f'done: {shown or "no metric"}')

    def steps(
        self, run: RunConfig, options: dict[str, Any], devices: Devices, state: CellState, commit: str
    ) -> dict[str, Any]:
        """Run what is not done yet; return the record's model, recipe, curves and versions."""
        raise NotImplementedError
