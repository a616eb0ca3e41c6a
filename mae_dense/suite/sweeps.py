"""Per-row hyper-parameter search of fine-tuning tasks (``sweep: {lr: [1e-4, 2e-4, 4e-4]}`` in a task entry).

As the MAE paper did for its Tables 4 and 5: every point of the grid runs on the first seed as an ordinary
resumable cell (the value goes in as a config option, through the task's ``sweep_keys``); the remaining
seeds are cells that depend on every point, and when they start they choose the best point on the task's
selection metric (its first metric, on the validation split) from the results store, then run with it.
Every point stays in the store; the leaderboard shows the chosen one as "best of N on val" and lists the
points in a table of their own. The same choice rule (:func:`best_point`) serves the cells and the tables.
"""

from __future__ import annotations

import itertools
from typing import Any

from ..errors import PipelineError
from .recipe import RunConfig
from .tasks import TASKS, Task

__all__ = [
    'Point',
    'best_point',
    'point_label',
    'point_options',
    'resolve_point',
    'sweep_points',
    'sweep_status',
    'sweep_values',
]

Point = tuple[tuple[str, Any], ...]  # ((hyper-parameter, value), ...), hashable and picklable


def sweep_points(sweep: dict[str, list]) -> list[Point]:
    """Every point of the grid, in the order the spec lists the values (the product of the lists)."""
    keys = list(sweep)
    return [tuple(zip(keys, values, strict=True)) for values in itertools.product(*(sweep[k] for k in keys))]


def point_label(point: Point) -> str:
    """``lr=0.0001``, ``lr=0.0002-drop_path=0.1``: the point's name in keys and work dirs."""
    return '-'.join(f'{k}={v:g}' for k, v in point)


def point_options(task: Task, point: Point) -> dict[str, Any]:
    """The config options that set ``point`` (through the task's ``sweep_keys``)."""
    return {task.sweep_keys[k]: v for k, v in point}


def best_point(values: dict[Point, float], task: Task) -> Point:
    """The point with the best selection metric (the task's first; lowest where lower is better)."""
    if not values:
        raise PipelineError(
            f'{task.name}: no sweep point finished with a {task.selection.name}: nothing to choose'
        )
    sign = 1 if task.selection.higher_is_better else -1
    return max(values, key=lambda p: (sign * values[p], -list(values).index(p)))


def _as_point(raw: Any) -> Point:
    return tuple((str(k), v) for k, v in raw)


def sweep_values(cells: list[dict[str, Any]], family: str, seed: int) -> dict[Point, float]:
    """The selection metric of each finished point of one sweep ``family`` at ``seed``, from stored cells."""
    values: dict[Point, float] = {}
    for c in cells:
        sweep = (c.get('card') or {}).get('sweep') or {}
        if (
            c['status'] != 'done'
            or sweep.get('family') != family
            or c['seed'] != seed
            or 'point' not in sweep
        ):
            continue
        metric = TASKS[c['task']].selection.name
        if metric in c['metrics']:
            values[_as_point(sweep['point'])] = c['metrics'][metric]
    return values


def sweep_status(cells: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Per (backbone, checkpoint, task, config hash) of a swept cell: its family, point, whether it is the
    chosen point of its family, N, and the selection metric's name. Families are chosen on the first
    seed their points ran on."""
    families: dict[str, list[dict]] = {}
    for c in cells:
        sweep = (c.get('card') or {}).get('sweep')
        if sweep and c['task'] in TASKS:
            families.setdefault(f'{c["checkpoint_sha256"]}/{sweep["family"]}', []).append(c)
    status: dict[tuple, dict[str, Any]] = {}
    for members in families.values():
        sweep = members[0]['card']['sweep']
        seeds = [c['seed'] for c in members if 'point' in (c['card']['sweep'] or {})]
        task = TASKS[members[0]['task']]
        values = sweep_values(members, sweep['family'], min(seeds)) if seeds else {}
        chosen = best_point(values, task) if values else None
        for c in members:
            s = c['card']['sweep']
            point = _as_point(s.get('point') or s.get('chosen') or ())
            key = (c['backbone'], c['checkpoint_sha256'], c['task'], c['config_hash'])
            status[key] = dict(
                family=sweep['family'],
                point=point,
                chosen=point == chosen,
                n=len(sweep['points']),
                on=sweep['on'],
                value=values.get(point),
            )
    return status


def resolve_point(cell: Any, options: dict[str, Any], identity: str, extra: dict | None) -> dict[str, Any]:
    """The sweep a task cell belongs to (for its card), with its point's options merged into ``options``.

    A point cell takes its own point; a choosing cell (another seed) takes the best of the first seed's
    finished points in the results store. ``family`` (the config hash without the point) ties a sweep's
    cells together in the store, whatever their lr.
    """
    spec, task = cell.task, cell.task.task
    family = RunConfig.read(spec.config, options, extra).hash
    metric = task.selection
    sweep: dict[str, Any] = dict(
        family=family,
        points=[dict(p) for p in sweep_points(spec.sweep)],
        on=f'{metric.name}: {metric.step} {metric.key}',
    )
    if cell.point:
        sweep['point'] = list(cell.point)
        options.update(point_options(task, cell.point))
        return sweep
    mine = [c for c in cell.ctx.store.cells() if c['checkpoint_sha256'] == identity]
    values = sweep_values(mine, family, cell.ctx.first_seed)
    chosen = best_point({p: v for p, v in values.items() if p in cell.choose}, task)  # this grid's points
    cell.log(f'best of {len(cell.choose)} on val ({metric.name}): {point_label(chosen)}')
    sweep['chosen'] = list(chosen)
    options.update(point_options(task, chosen))
    return sweep
