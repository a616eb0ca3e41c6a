"""Running the suite: pretraining stages, then one cell per (backbone, task, seed), each resumable on its own.

A cell keeps its progress in ``<work_dir>/<backbone>/<task>-seed<seed>/cell.json`` (train -> single-scale
test -> ms+flip test -> qualitative predictions), so a relaunch continues each cell where it stopped and
skips finished ones; a cell already in the results store (same checkpoint hash, config hash and seed) is
not run again. A failing cell is recorded with its one-line reason and the others go on.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from ..checkpoint import checkpoint_sha256, file_sha256, local_checkpoint
from ..errors import PipelineError
from .figures import detection_rows, panel_png, segmentation_rows
from .launch import Launcher, run_logged
from .recipe import (
    config_hash,
    effective_recipe,
    git_commit,
    model_label,
    read_config,
    trained_lr,
    versions,
)
from .schedule import Job, one_line_reason, run_jobs, visible_devices
from .spec import PROBE_MODES, BackboneSpec, SuiteSpec, TaskSpec
from .store import ResultStore
from .tables import UNKNOWN

# where each task's config takes the backbone weights
PRETRAINED_KEY = {
    'ade20k': 'model.pretrained',
    'coco': 'model.backbone.pretrained',
    'probe': 'model.pretrained',
}
Devices = list[str] | None  # the GPUs a job was given (None: none known, or Slurm's)
RANDOM = 'random'  # the checkpoint identity of a from-scratch backbone
_KEEP = object()  # the task config's own `pretrained` (the single-backbone form without pretrain:)
# validation scalars kept as curves (the rest of mmengine's per-evaluation keys stay in the run's logs)
CURVE_METRICS = {'mIoU': 'mIoU', 'aAcc': 'aAcc', 'coco/bbox_mAP': 'box AP', 'coco/segm_mAP': 'mask AP'}


def placeholder_fields(backbone: str, task: str, seed: int, **fields: Any) -> dict[str, Any]:
    """A record's identity before its weights and config are known (``unknown`` placeholders, which the
    report files under the backbone and task), with ``fields``; a cell replaces them as it learns them."""
    return dict(
        backbone=backbone,
        checkpoint_sha256=f'{UNKNOWN}:{backbone}',
        task=task,
        config_hash=UNKNOWN,
        seed=seed,
        **fields,
    )


def options_argv(options: dict[str, Any]) -> list[str]:
    """``--cfg-options k=v ...`` (last on a command line: it takes every value after it)."""
    return ['--cfg-options', *(f'{k}={v}' for k, v in options.items())] if options else []


def read_curves(train_dir: Path) -> dict[str, list]:
    """Training loss and validation metrics at their iterations from mmengine's ``scalars.json`` files.

    Returns:
        ``{'loss': [[step, loss], ...], '<metric>': [[step, points], ...]}`` (COCO's AP x 100), in the order
        the runs wrote them (a resumed run adds a new timestamped directory).
    """
    curves: dict[str, list] = {}
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
            for key, name in CURVE_METRICS.items():
                if key in row:
                    scale = 100.0 if key.startswith('coco/') else 1.0
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


def task_metrics(task: str, steps: dict[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """A cell's leaderboard metrics in points, and the reason for each expected metric that is missing."""
    metrics: dict[str, float] = {}
    missing: dict[str, str] = {}

    def take(name: str, source: dict, key: str, scale: float, step: str) -> None:
        value = source.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            metrics[name] = scale * float(value)
        else:
            missing[name] = f'the {step} returned no {key}' + (f' ({value!r})' if value is not None else '')

    if task == 'ade20k':
        take('mIoU', steps['test_ss'], 'mIoU', 1.0, 'single-scale test')
        take('aAcc', steps['test_ss'], 'aAcc', 1.0, 'single-scale test')
        if 'test_ms' in steps:
            take('mIoU ms+flip', steps['test_ms'], 'mIoU', 1.0, 'ms+flip test')
    elif task == 'coco':
        take('box AP', steps['test_ss'], 'coco/bbox_mAP', 100.0, 'test')
        take('mask AP', steps['test_ss'], 'coco/segm_mAP', 100.0, 'test')
    else:
        take('mIoU', steps['probe']['metrics'], 'mIoU', 1.0, 'probe')
        take('aAcc', steps['probe']['metrics'], 'aAcc', 1.0, 'probe')
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix('.tmp')
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(tmp, self.path)  # a kill never leaves half a progress file


class Suite:
    """Runs a :class:`SuiteSpec`: pretraining stages, every (backbone, task, seed) cell, the figures.

    Args:
        spec: the checked pipeline config.
        python: interpreter for the stages (default ``$PYTHON`` or this one).
    """

    def __init__(self, spec: SuiteSpec, python: str | None = None) -> None:
        self.spec = spec
        self.store = ResultStore(spec.db)
        self.launcher = Launcher(
            spec.launcher, python or os.environ.get('PYTHON') or sys.executable, spec.slurm
        )
        self._weights: dict[str, tuple[Any, str]] = {}  # backbone -> (value for `pretrained`, identity)
        self._recorded: set[str] = set()
        self._lock = threading.Lock()

    # ----------------------------------------------------------------------------------------- helpers
    def _dir(self, backbone: BackboneSpec, stage: str) -> Path:
        return self.spec.work_dir / backbone.name / stage

    def _log(self, key: str, msg: str) -> None:
        print(f'[pipeline] {key}: {msg}', flush=True)

    def _run(
        self, module: str, args: list[str], gpus: int, devices: Devices, name: str, log: Path, what: str
    ) -> None:
        distributed = module in ('mae_dense.cli.train', 'mae_dense.cli.test')
        argv, env = self.launcher.command(module, args, gpus, devices, name, distributed)
        self._log(name, ' '.join(argv))
        run_logged(argv, env, log, what)

    def _job_name(self, *parts: Any) -> str:
        prefix = self.spec.slurm.get('job_name') or 'mae-dense'
        return '-'.join([prefix, *map(str, parts)])

    def weights(self, backbone: BackboneSpec, task: TaskSpec | None = None) -> tuple[Any, str]:
        """``(value for the config's pretrained, checkpoint identity)`` of a backbone.

        The identity is the sha256 of the weights file (a URL is fetched into torch.hub's cache first),
        ``random`` for a from-scratch backbone.
        """
        key = backbone.name if backbone.kind != 'config' else f'{backbone.name}/{task.name}'
        with self._lock:
            if key in self._weights:
                return self._weights[key]
        if backbone.kind == 'random':
            out = (None, RANDOM)
        elif backbone.kind == 'checkpoint':
            local = local_checkpoint(backbone.checkpoint)
            out = (str(local), checkpoint_sha256(local))
        elif backbone.kind == 'pretrain':
            state = CellState(self._dir(backbone, 'pretrain'))
            if not state.done:
                raise PipelineError(f'{backbone.name}: its pretraining stage has not finished')
            out = (state.data['checkpoint'], state.data['checkpoint_sha256'])
        else:  # the task config's own pretrained
            cfg = read_config(task.config, task.cfg_options)
            src = cfg.model.get('pretrained') if task.name != 'coco' else cfg.model.backbone.get('pretrained')
            if not src:
                out = (_KEEP, RANDOM)
            else:
                out = (_KEEP, checkpoint_sha256(src))
        with self._lock:
            self._weights[key] = out
        return out

    def prepare(self) -> None:
        """Fetch and hash every given checkpoint before any cell runs (a bad URL stops here, in one line)."""
        for backbone in self.spec.backbones:
            if backbone.kind == 'checkpoint':
                self.weights(backbone)

    def _state(self, key: str, work: Path, identity: dict[str, str]) -> CellState:
        """The progress of ``work`` if it belongs to ``identity``; else the old run is moved aside (never
        resumed with other weights or another config) and the cell starts afresh."""
        state = CellState(work)
        if state.stale(identity):
            aside = work.with_name(f'{work.name}.stale-{time.strftime("%Y%m%d-%H%M%S")}')
            work.rename(aside)
            self._log(key, f'the weights or the config changed since the last run: old run moved to {aside}')
            state = CellState(work)
        state.data['identity'] = identity
        return state

    def _record(self, key: str, record: dict[str, Any], commit: str | None = None) -> None:
        """Add ``record`` to the results store; ``commit``: :func:`git_commit` if the caller has it already."""
        base = dict(git_commit=commit or git_commit(), pipeline=self.spec.source)
        added = self.store.add({**base, **record})
        with self._lock:
            self._recorded.add(key)
        if not added and record['status'] == 'done':
            self._log(
                key, 'already in the results store (same checkpoint, config and seed): not counted twice'
            )

    def _fail(self, key: str, state: CellState, exc: BaseException, **fields: Any) -> None:
        reason = one_line_reason(exc)
        state.save(status='failed', reason=reason)
        self._record(key, dict(status='failed', reason=reason, **fields))
        self._log(key, f'FAILED: {reason}')

    # ---------------------------------------------------------------------------------------- pretrain
    def run_pretrain(self, backbone: BackboneSpec, devices: Devices) -> None:
        """Train the MAE of a ``pretrain:`` backbone; its last checkpoint becomes the backbone's weights."""
        key = f'{backbone.name}/pretrain'
        spec = backbone.pretrain
        work = self._dir(backbone, 'pretrain')
        seed = self.spec.seeds[0]
        options = {**spec.cfg_options, 'randomness.seed': seed}
        fields = placeholder_fields(backbone.name, 'pretrain', seed, config=spec.config, work_dir=str(work))
        state = CellState(work)
        try:
            hashed = config_hash(spec.config, options)
            state = self._state(key, work, {'config_hash': hashed, 'seed': seed})
            if state.done:
                self._log(key, f'done, skipped ({state.data["checkpoint"]})')
                return
            commit = git_commit()
            recipe = effective_recipe(
                spec.config, options, spec.gpus, seed, known_hash=hashed, known_commit=commit
            )
            fields.update(config_hash=recipe['config_hash'], model=recipe['model'])
            state.save(status='running')
            args = [spec.config, '--work-dir', str(work / 'train'), '--resume', *options_argv(options)]
            self._run(
                'mae_dense.cli.train',
                args,
                spec.gpus,
                devices,
                self._job_name(backbone.name, 'pretrain'),
                work / 'train.log',
                'pretraining',
            )
            ckpt = last_checkpoint(work / 'train')
            recipe['lr'] = trained_lr(ckpt)
            sha = file_sha256(ckpt)
            curves = read_curves(work / 'train')
            metrics = {'final loss': curves['loss'][-1][1]} if curves.get('loss') else {}
            self._record(
                key,
                dict(
                    fields,
                    checkpoint_sha256=sha,
                    checkpoint=ckpt,
                    status='done',
                    metrics=metrics,
                    recipe=recipe,
                    curves=curves,
                    versions=recipe['versions'],
                ),
                commit,
            )
            state.save(status='done', checkpoint=ckpt, checkpoint_sha256=sha)
        except Exception as exc:
            self._fail(key, state, exc, **fields)
            raise

    # -------------------------------------------------------------------------------------------- cells
    def run_cell(self, backbone: BackboneSpec, task: TaskSpec, seed: int, devices: Devices) -> None:
        """One (backbone, task, seed) cell: fine-tune and test, or probe; then the results store."""
        key = f'{backbone.name}/{task.name}/seed{seed}'
        work = self._dir(backbone, f'{task.name}-seed{seed}')
        fields = placeholder_fields(
            backbone.name, task.name, seed, config=task.config, mode=task.mode, work_dir=str(work)
        )
        state = CellState(work)
        try:
            pretrained, identity = self.weights(backbone, task)
            fields['checkpoint_sha256'] = identity
            options = {**task.cfg_options, 'randomness.seed': seed}
            if pretrained is not _KEEP:
                options[PRETRAINED_KEY[task.name]] = pretrained
            extra = {'mode': task.mode} if task.name == 'probe' else None
            fields['config_hash'] = config_hash(task.config, options, extra)
            fields['checkpoint'] = None if pretrained in (None, _KEEP) else pretrained
            state = self._state(key, work, {k: fields[k] for k in ('checkpoint_sha256', 'config_hash')})
            if state.done:
                self._log(key, 'done, skipped')
                return
            stored = self.store.find(identity, task.name, fields['config_hash'], seed)
            if stored is not None:
                self._log(
                    key,
                    f'already in the results store ({stored["date"]}, {stored["pipeline"]}): not run again',
                )
                state.save(status='done', from_store=True)
                return
            state.save(status='running')
            commit = git_commit()
            steps = self._probe if task.name == 'probe' else self._finetune
            record = steps(backbone, task, options, seed, devices, work, state, fields['config_hash'], commit)
            metrics, missing = task_metrics(task.name, state.steps)
            self._record(key, dict(fields, status='done', metrics=metrics, missing=missing, **record), commit)
            state.save(status='done')
            shown = ', '.join(f'{k} {v:.2f}' for k, v in metrics.items())
            self._log(key, f'done: {shown or "no metric"}')
        except Exception as exc:
            self._fail(key, state, exc, **fields)
            raise

    def _finetune(
        self,
        backbone: BackboneSpec,
        task: TaskSpec,
        options: dict[str, Any],
        seed: int,
        devices: Devices,
        work: Path,
        state: CellState,
        hashed: str,
        commit: str,
    ) -> dict[str, Any]:
        """Train, test (single scale, ms+flip), predict a few images; the record's model, recipe, curves.

        ``hashed``: the cell's config hash; ``commit``: its :func:`git_commit` (neither computed again).
        """
        recipe = effective_recipe(
            task.config, options, task.gpus, seed, known_hash=hashed, known_commit=commit
        )
        steps = state.steps
        name = self._job_name(backbone.name, task.name, f's{seed}')
        if 'checkpoint' not in steps:
            args = [task.config, '--work-dir', str(work / 'train'), '--resume', *options_argv(options)]
            self._run('mae_dense.cli.train', args, task.gpus, devices, name, work / 'train.log', 'training')
            state.step('checkpoint', last_checkpoint(work / 'train'))
        ckpt = steps['checkpoint']
        # weights come from the fine-tuned checkpoint; the test needs no pretrained file
        test_opts = {k: v for k, v in options.items() if k != PRETRAINED_KEY[task.name]}
        evals = ['--eval', 'mIoU'] if task.name == 'ade20k' else ['--eval', 'bbox', 'segm']
        # the first seed's single-scale test also writes its ADE20K label maps (the qualitative panel's)
        qualitative = bool(self.spec.qualitative_images) and seed == self.spec.seeds[0]
        labels = (
            ['--out', str(work / 'qualitative' / 'labels')] if task.name == 'ade20k' and qualitative else []
        )
        tests = [('test_ss', labels, 'test')]
        if task.name == 'ade20k' and task.ms_flip:
            tests.append(('test_ms', ['--aug-test'], 'ms+flip test'))
        for step, flags, what in tests:
            if step not in steps:
                args = [
                    task.config,
                    ckpt,
                    '--work-dir',
                    str(work / step),
                    *evals,
                    *flags,
                    *options_argv(test_opts),
                ]
                self._run('mae_dense.cli.test', args, task.gpus, devices, name, work / f'{step}.log', what)
                state.step(step, test_metrics(work / step))
        if qualitative and 'qualitative' not in steps:
            if task.name == 'coco':
                self._predict_few(ckpt, task, test_opts, devices, name, work)
            state.step('qualitative', str(work / 'qualitative'))
        recipe['lr'] = trained_lr(ckpt)
        curves = read_curves(work / 'train')
        return dict(model=recipe['model'], recipe=recipe, curves=curves, versions=recipe['versions'])

    def _predict_few(
        self, ckpt: str, task: TaskSpec, options: dict[str, Any], devices: Devices, name: str, work: Path
    ) -> None:
        """COCO detections on the first validation images for the qualitative panel: results JSON only (the
        whole test set's would be hundreds of MB), no COCO evaluation, one process."""
        out = work / 'qualitative'
        options = {
            **options,
            'test_dataloader.dataset.indices': self.spec.qualitative_images,
            'test_evaluator.format_only': True,
        }
        args = [task.config, ckpt, '--work-dir', str(out), '--out', str(out / 'pred'), *options_argv(options)]
        self._run(
            'mae_dense.cli.test',
            args,
            1,
            devices[:1] if devices else devices,
            name,
            work / 'qualitative.log',
            'qualitative predictions',
        )

    def _probe(
        self,
        backbone: BackboneSpec,
        task: TaskSpec,
        options: dict[str, Any],
        seed: int,
        devices: Devices,
        work: Path,
        state: CellState,
        hashed: str,
        commit: str,
    ) -> dict[str, Any]:
        """Run the probe command once; its result file gives the metrics, mode, chosen lr and sweep.

        ``hashed``: the cell's config hash (``mode`` included); ``commit`` is recorded by the caller.
        """
        steps = state.steps
        if 'probe' not in steps:
            args = [
                task.config,
                '--work-dir',
                str(work / 'probe'),
                '--mode',
                task.mode,
                *options_argv(options),
            ]
            name = self._job_name(backbone.name, task.name, f's{seed}')
            self._run(task.module, args, 1, devices, name, work / 'probe.log', 'probe')
            state.step('probe', read_probe_result(work / 'probe'))
        result = steps['probe']
        cfg = read_config(task.config, options)
        recipe = dict(
            config=task.config,
            cfg_options=options,
            world_size=1,
            mode=result['mode'],
            lr=result.get('lr'),
            sweep=result.get('sweep'),
            iterations=result.get('iterations'),
            seed=seed,
            config_hash=hashed,
            model=model_label(cfg),
        )
        return dict(model=recipe['model'], mode=result['mode'], recipe=recipe, curves={}, versions=versions())

    # ------------------------------------------------------------------------------------------- the run
    def jobs(self) -> list[Job]:
        """Pretraining stages first, then the cells task by task, seed by seed, backbone by backbone."""
        jobs = [
            Job(f'{b.name}/pretrain', b.pretrain.gpus, partial(self.run_pretrain, b))
            for b in self.spec.backbones
            if b.kind == 'pretrain'
        ]
        for task in self.spec.tasks:
            for seed in self.spec.seeds:
                for b in self.spec.backbones:
                    after = (f'{b.name}/pretrain',) if b.kind == 'pretrain' else ()
                    jobs.append(
                        Job(
                            f'{b.name}/{task.name}/seed{seed}',
                            task.gpus,
                            partial(self.run_cell, b, task, seed),
                            after,
                        )
                    )
        return jobs

    def run(self) -> dict[str, str | None]:
        """Run every job; return each job's failure reason (None: finished)."""
        self.spec.work_dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        jobs = self.jobs()
        devices = None if self.spec.launcher == 'slurm' else visible_devices()
        where = (
            'Slurm'
            if devices is None
            else (f'GPUs {", ".join(devices)}' if devices else 'CPU, one at a time')
        )
        print(f'[pipeline] {len(jobs)} jobs on {where}; results store {self.spec.db}', flush=True)
        outcome = run_jobs(jobs, devices)
        for job in jobs:  # cells that never started (their pretraining failed) are failures too
            if outcome[job.key] is not None and job.key not in self._recorded:
                backbone, task, seed_part = (job.key.split('/') + [''])[:3]
                seed = int(seed_part[4:] or self.spec.seeds[0])
                fields = placeholder_fields(backbone, task, seed, status='failed', reason=outcome[job.key])
                self._record(job.key, fields)
        return outcome

    # --------------------------------------------------------------------------------------------- figures
    def draw_figures(self) -> None:
        """Per backbone: the qualitative panel of its first seed's cells and, after pretraining, MAE
        reconstructions; into the results store. A figure that cannot be drawn is a warning, not a failure."""
        for backbone in self.spec.backbones:
            for kind, draw in (('qualitative', self._qualitative), ('reconstruction', self._reconstructions)):
                try:
                    drawn = draw(backbone)
                except Exception as exc:  # a figure never fails a finished pipeline
                    self._log(backbone.name, f'warning: no {kind} figure ({one_line_reason(exc)})')
                    continue
                if drawn is not None:
                    png, caption = drawn
                    identity = self._figure_identity(backbone)
                    self.store.add_figure(backbone.name, identity, kind, png, caption)

    def _figure_identity(self, backbone: BackboneSpec) -> str:
        try:
            return self.weights(backbone, self.spec.tasks[0] if self.spec.tasks else None)[1]
        except PipelineError:
            return f'{UNKNOWN}:{backbone.name}'

    def _task_data(self, task: TaskSpec) -> tuple[Path, Any]:
        """The test set of a task config: (data root, dataset config)."""
        ds = read_config(task.config, task.cfg_options).test_dataloader.dataset
        return Path(ds.get('data_root') or ''), ds

    def _ade_images(self, backbone: BackboneSpec) -> list[Path]:
        """The ADE20K validation images of the backbone's qualitative panel (in the panel's order)."""
        for task in self.spec.tasks:
            preds = self._dir(backbone, f'{task.name}-seed{self.spec.seeds[0]}') / 'qualitative' / 'labels'
            if task.name == 'ade20k' and preds.is_dir():
                root, ds = self._task_data(task)
                suffix = ds.get('img_suffix', '.jpg')
                return [
                    root / ds.data_prefix.img_path / (p.stem + suffix) for p in sorted(preds.glob('*.png'))
                ]
        return []

    def _qualitative(self, backbone: BackboneSpec) -> tuple[bytes, str] | None:
        rows = []
        for task in self.spec.tasks:
            work = self._dir(backbone, f'{task.name}-seed{self.spec.seeds[0]}')
            if task.name == 'probe' or 'qualitative' not in CellState(work).steps:
                continue
            root, ds = self._task_data(task)
            if task.name == 'ade20k':
                rows += segmentation_rows(
                    work / 'qualitative' / 'labels',
                    root / ds.data_prefix.img_path,
                    root / ds.data_prefix.seg_map_path,
                    self.spec.qualitative_images,
                    ds.get('img_suffix', '.jpg'),
                )
            else:
                rows += detection_rows(
                    root / ds.ann_file,
                    root / ds.data_prefix.img,
                    work / 'qualitative' / 'pred',
                    self.spec.qualitative_images,
                )
        if not rows:
            return None
        title = f'{backbone.name}, seed {self.spec.seeds[0]}'
        return panel_png(rows, title), f'image | ground truth | prediction ({title})'

    def _reconstructions(self, backbone: BackboneSpec) -> tuple[bytes, str] | None:
        """MAE reconstructions by a pretraining stage's final model (ADE20K validation images if the panel
        has them, else the first images of the pretraining folder)."""
        if backbone.kind != 'pretrain' or not self.spec.qualitative_images:
            return None
        state = CellState(self._dir(backbone, 'pretrain'))
        if not state.done:
            return None
        import torch

        from ..data.image_folder import list_image_folder
        from ..models.archs import mae_config
        from ..visualize import COLUMNS, load_image, load_model, reconstruct, to_uint8

        cfg = read_config(backbone.pretrain.config, backbone.pretrain.cfg_options)
        kwargs = {k: v for k, v in cfg.model.items() if k not in ('type', 'arch', 'data_preprocessor')}
        arch = cfg.model.get('arch', 'base')
        model = load_model(state.data['checkpoint'], mae_config(arch, **kwargs), None, 'cpu')
        images = self._ade_images(backbone)[: self.spec.qualitative_images]
        if not images:
            ds = cfg.train_dataloader.dataset
            folder = Path(ds.data_root) / ds.get('split', 'train')
            images = [folder / p for p in list_image_folder(folder)[0][: self.spec.qualitative_images]]
        gen = torch.Generator().manual_seed(0)  # the same masks every time
        named = []
        for path in images:
            x = load_image(path, model.img_size).unsqueeze(0)  # (1, 3, S, S)
            noise = torch.rand(1, model.num_patches, generator=gen)
            loss, panels = reconstruct(model, x, model.mask_ratio, noise, model.norm_pix_loss)
            named.append(
                (f'{Path(path).name}, loss {loss.item():.3f}', [to_uint8(panels[c][0]) for c in COLUMNS])
            )
        title = f'{backbone.name}: MAE reconstructions, mask ratio {model.mask_ratio:g}'
        return panel_png(named, title, COLUMNS), f'{" | ".join(COLUMNS)} (loss on the removed patches)'
