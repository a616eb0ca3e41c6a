"""The two kinds of a (backbone, task, seed) cell, by the task's kind in the table of tasks.

* :class:`FinetuneCell`: trains the task config from the backbone's weights, then runs the task's tests.
* :class:`ProbeCell`: runs the probe command once (frozen backbone).

:func:`task_cells` gives the cells of a (backbone, task, seed): one, or a swept task's points and choosers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .backbones import BackboneSpec
from .cell import Context, Devices, TaskCell
from .outputs import last_checkpoint, options_argv, read_curves, read_probe_result, test_metrics
from .recipe import trained_lr, versions
from .spec import TaskSpec
from .sweeps import sweep_points

__all__ = ['FinetuneCell', 'ProbeCell', 'task_cell', 'task_cells']


@dataclass(frozen=True)
class FinetuneCell(TaskCell):
    """Train the task config, run its tests (single scale, ms+flip, ...), predict a few images."""

    def steps(self, run, options, devices, state, commit):
        task, work, steps = self.task, self.work, state.steps
        recipe = run.recipe(task.gpus, self.seed, commit)
        if 'checkpoint' not in steps:
            args = [task.config, '--work-dir', str(work / 'train'), '--resume', *options_argv(options)]
            self.launch('mae_dense.cli.train', args, task.gpus, devices, work / 'train.log', 'training')
            state.step('checkpoint', last_checkpoint(work / 'train'))
        ckpt = steps['checkpoint']
        # weights come from the fine-tuned checkpoint; the test needs no pretrained file
        test_opts = {k: v for k, v in options.items() if k != task.task.weights_key}
        # the first seed's first test also writes the qualitative panel's predictions
        qualitative = bool(self.ctx.qualitative_images) and self.seed == self.ctx.first_seed
        for i, test in enumerate(task.tests):
            if test.step in steps:
                continue
            flags = [*test.flags]
            if i == 0 and qualitative and task.task.qualitative == 'segmentation':
                flags += ['--out', str(work / 'qualitative' / 'labels')]  # its label maps
            args = [task.config, ckpt, '--work-dir', str(work / test.step), *task.task.eval_flags, *flags]
            args += options_argv(test_opts)
            self.launch('mae_dense.cli.test', args, task.gpus, devices, work / f'{test.step}.log', test.what)
            state.step(test.step, test_metrics(work / test.step))
        if qualitative and 'qualitative' not in steps:
            if task.task.qualitative == 'detection':
                self._predict_few(ckpt, test_opts, devices)
            state.step('qualitative', str(work / 'qualitative'))
        recipe['lr'] = trained_lr(ckpt)
        curves = read_curves(work / 'train', task.task)
        return dict(model=recipe['model'], recipe=recipe, curves=curves, versions=recipe['versions'])

    def _predict_few(self, ckpt: str, options: dict[str, Any], devices: Devices) -> None:
        """Detections on the first validation images for the qualitative panel: results JSON only (the
        whole test set's would be hundreds of MB), no evaluation, one process."""
        out = self.work / 'qualitative'
        options = {
            **options,
            'test_dataloader.dataset.indices': self.ctx.qualitative_images,
            'test_evaluator.format_only': True,
        }
        args = [
            self.task.config,
            ckpt,
            '--work-dir',
            str(out),
            '--out',
            str(out / 'pred'),
            *options_argv(options),
        ]
        devices = devices[:1] if devices else devices
        self.launch(
            'mae_dense.cli.test', args, 1, devices, self.work / 'qualitative.log', 'qualitative predictions'
        )


@dataclass(frozen=True)
class ProbeCell(TaskCell):
    """Run the probe command once; its result file gives the metrics, mode, chosen lr and sweep."""

    def steps(self, run, options, devices, state, commit):
        task, steps = self.task, state.steps
        if 'probe' not in steps:
            args = [
                task.config,
                '--work-dir',
                str(self.work / 'probe'),
                '--mode',
                task.mode,
                *options_argv(options),
            ]
            self.launch(task.module, args, 1, devices, self.work / 'probe.log', 'probe')
            state.step('probe', read_probe_result(self.work / 'probe'))
        result = steps['probe']
        recipe = dict(
            config=task.config,
            cfg_options=options,
            world_size=1,
            mode=result['mode'],
            lr=result.get('lr'),
            sweep=result.get('sweep'),
            iterations=result.get('iterations'),
            seed=self.seed,
            config_hash=run.hash,
            model=run.model,
        )
        return dict(model=recipe['model'], mode=result['mode'], recipe=recipe, curves={}, versions=versions())


def task_cells(backbone: BackboneSpec, task: TaskSpec, seed: int, ctx: Context) -> list[TaskCell]:
    """The cells of a (backbone, task, seed): one, or for a swept task a cell per point on the first seed
    and one that chooses on every other seed. Their variant follows the task's kind."""
    kind = FinetuneCell if task.task.kind == 'finetune' else ProbeCell
    if not task.sweep:
        return [kind(backbone=backbone, seed=seed, ctx=ctx, task=task)]
    points = sweep_points(task.sweep)
    if seed == ctx.first_seed:
        return [kind(backbone=backbone, seed=seed, ctx=ctx, task=task, point=p) for p in points]
    return [kind(backbone=backbone, seed=seed, ctx=ctx, task=task, choose=tuple(points))]


def task_cell(backbone: BackboneSpec, task: TaskSpec, seed: int, ctx: Context) -> TaskCell:
    """The one cell of an unswept (backbone, task, seed)."""
    (cell,) = task_cells(backbone, task, seed, ctx)
    return cell
