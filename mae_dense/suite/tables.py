"""The leaderboard's numbers: flat records (mean ± std over seeds, each with its protocol card) and the
tables beside the matrix (:mod:`.board`): published numbers, results, cards, sweeps, recipes.

Everything here is computed from the results store's cells alone, so a report rebuilt from the store
(``mae-dense report --db``) has the same tables as the pipeline's.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from .cards import describe_protocol, with_test
from .references import REFERENCES
from .sweeps import point_label, sweep_status
from .tasks import TASKS, benchmark_order, metric_rank, task_of_benchmark

UNKNOWN = 'unknown'


def order_key(seq: Sequence[str], item: str | None) -> tuple[int, str]:
    return (seq.index(item) if item in seq else len(seq), item or '')


def lower_is_better(benchmark: str, metric: str) -> bool:
    """Whether the table of tasks marks this metric as an error (RMSE): the tables say so beside it."""
    task = task_of_benchmark(benchmark)
    found = task.metric(metric) if task else None
    return found is not None and not found.higher_is_better


def column_key(benchmark: str, metric: str) -> tuple:
    """Where a (benchmark, metric) column goes: the table of tasks' column order, then its metric order."""
    return (*order_key(benchmark_order(), benchmark), metric_rank(benchmark, metric), metric)


def fmt(value: float | None, std: float | None = None, n: int = 1) -> str:
    """'48.13' or '48.13 ± 0.41 (n=3)'; '—' for no value."""
    if value is None:
        return '—'
    return f'{value:.2f}' if n < 2 or std is None else f'{value:.2f} ± {std:.2f} (n={n})'


def _group_cells(cells: list[dict[str, Any]]) -> dict[tuple, list[dict]]:
    """The cells of known tasks by (backbone, checkpoint, task, config hash, mode): one group per record."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        if c['task'] in TASKS:
            groups.setdefault(
                (c['backbone'], c['checkpoint_sha256'], c['task'], c['config_hash'], c.get('mode')), []
            ).append(c)
    return groups


def _record_base(group: tuple, members: list[dict]) -> dict[str, Any]:
    """What the records of one group share: who ran what, its card, and the seeds that failed."""
    backbone, sha, name, chash, mode = group
    card = next((c['card'] for c in members if c.get('card')), {})
    return dict(
        card=card,
        backbone=backbone,
        checkpoint_sha256=sha,
        model=next((c['model'] for c in members if c.get('model')), None),
        benchmark=TASKS[name].benchmark,
        task=name,
        mode=mode,
        config_hash=chash,
        config=next((c['config'] for c in members if c.get('config')), None),
        failed=[dict(seed=c['seed'], reason=c.get('reason')) for c in members if c['status'] == 'failed'],
    )


def _record(
    base: dict[str, Any], metric: str, values: list[tuple[int, float]], status: str, reason: str | None
) -> dict[str, Any]:
    """One record: ``base`` and the mean ± std of the (seed, value) pairs of ``metric``."""
    nums = [v for _, v in values]
    protocol = with_test(base['card'], TASKS[base['task']].ms_flip(metric))
    return dict(
        base,
        protocol=None if protocol is None else protocol.__dict__,
        metric=metric,
        value=statistics.mean(nums) if nums else None,
        std=statistics.stdev(nums) if len(nums) > 1 else None,
        n=len(nums),
        seeds=[s for s, _ in values],
        status=status,
        reason=reason,
    )


def _metric_records(base: dict[str, Any], done: list[dict]) -> list[dict[str, Any]]:
    """One record per metric the finished cells ``done`` reported (or said was missing), in column order."""
    names = {m for c in done for m in (*c['metrics'], *c.get('missing', {}))}
    records = []
    for metric in sorted(names, key=lambda m: column_key(base['benchmark'], m)):
        values = [(c['seed'], c['metrics'][metric]) for c in done if metric in c['metrics']]
        reasons = [c['missing'][metric] for c in done if metric in c.get('missing', {})]
        status = 'done' if values else 'missing'
        records.append(_record(base, metric, values, status, reasons[0] if reasons and not values else None))
    return records


def leaderboard_records(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (backbone, checkpoint, benchmark, metric, mode, config hash), over the seeds.

    Each record: backbone, checkpoint_sha256, model, benchmark, task, metric, mode, value (mean), std (None
    for one seed), n, seeds, config_hash, config, card (the cell's protocol card), protocol (the card's
    comparability fields for this number; None without a card), status ('done', 'missing': finished cells
    that did not report the metric, 'failed': no seed finished, 'sweep point': a searched point that was
    not the best), reason, failed ([{seed, reason}] of failed seeds), sweep (the point, N, chosen or not).
    """
    records = []
    swept = sweep_status(cells)
    for group, members in _group_cells(cells).items():
        base = _record_base(group, members)
        base['sweep'] = swept.get(group[:4])
        done = sorted((c for c in members if c['status'] == 'done'), key=lambda c: c['seed'])
        if done:
            mine = _metric_records(base, done)
            if base['sweep'] is not None and not base['sweep']['chosen']:
                mine = [dict(r, status='sweep point') for r in mine]
            records += mine
        else:  # a failed cell shows as failed under each of its columns
            for metric in TASKS[group[2]].metric_names:
                records.append(_record(base, metric, [], 'failed', base['failed'][0]['reason']))
    return records


def published_table() -> tuple[list[str], list[list[str]]]:
    """The published numbers with their sources and protocols."""
    headers = ['benchmark', 'model', 'pre-training', 'metric', 'published', 'source', 'protocol']
    return headers, [
        [r.benchmark, r.model, r.label, r.metric, f'{r.value:.2f}', r.source, describe_protocol(r.protocol)]
        for r in REFERENCES
    ]


def cards_table(records: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The protocol card of every (backbone, benchmark, config) shown: what each number was measured under."""
    headers = ['backbone', 'benchmark', 'source', 'patch', 'rel-pos at transfer', 'windows at transfer']
    headers += ['protocol', 'lr', 'lr searched', 'seeds', 'config hash']
    rows, seen = [], set()
    for r in records:
        card, key = r.get('card') or {}, (r['backbone'], r['checkpoint_sha256'], r['task'], r['config_hash'])
        if not card or key in seen or r['status'] == 'sweep point':
            continue
        seen.add(key)
        lr = '—' if card.get('lr') is None else f'{card["lr"]:.4g}'
        source = card['source'] + (f' {card["timm_kwargs"]}' if card.get('timm_kwargs') else '')
        protocol = describe_protocol(with_test(card, False)) + (f' ({r["mode"]})' if r['mode'] else '')
        protocol += f'; trained on {card["train_set"]}' if card.get('train_set') else ''
        rows.append(
            [
                r['backbone'],
                r['benchmark'],
                source,
                str(card.get('patch_size')),
                card['rel_pos'],
                card['windows'],
            ]
            + [protocol, lr, card['lr_searched'], ', '.join(map(str, r['seeds'])), r['config_hash']]
        )
    return headers, rows


def sweeps_table(records: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Every point of every per-row search, its selection metric on the first seed, and the chosen one."""
    headers = ['backbone', 'benchmark', 'point', 'selection metric', 'value (first seed)', 'chosen']
    rows, seen = [], set()
    for r in records:
        s = r.get('sweep')
        key = (r['backbone'], r['checkpoint_sha256'], r['task'], r['config_hash'])
        if s is None or key in seen:
            continue
        seen.add(key)
        value = '—' if s['value'] is None else f'{s["value"]:.2f}'
        chosen = f'best of {s["n"]} on val' if s['chosen'] else ''
        rows.append([r['backbone'], r['benchmark'], point_label(s['point']), s['on'], value, chosen])
    return headers, rows


def results_table(records: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The flat records as a table (backbone, benchmark, metric, mode, value, std, n, config hash, status)."""
    headers = [
        'backbone',
        'model',
        'benchmark',
        'metric',
        'mode',
        'value',
        'std',
        'n',
        'config hash',
        'status',
    ]
    rows = [
        [
            r['backbone'],
            r['model'] or '',
            r['benchmark'],
            r['metric'],
            r['mode'] or '',
            fmt(r['value']),
            '' if r['std'] is None else f'{r["std"]:.2f}',
            str(r['n']),
            r['config_hash'],
            r['status'] + (f': {r["reason"]}' if r['reason'] else ''),
        ]
        for r in records
    ]
    return headers, rows


def recipes_table(cells: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The effective recipe of every finished run (pretraining stages included)."""
    headers = [
        'backbone',
        'task',
        'seed',
        'world size',
        'batch/GPU',
        'accum',
        'eff. batch',
        'lr',
        'length',
        'precision',
        'mode',
        'config hash',
        'date',
    ]
    rows = []
    for c in cells:
        if c['status'] != 'done':
            continue
        rc = c['recipe']
        if rc.get('iterations'):
            length = f'{rc["iterations"]} it'
        else:
            length = f'{rc["epochs"]} ep' if rc.get('epochs') else ''
        lr = '—' if rc.get('lr') is None else f'{rc["lr"]:.4g}'
        setup = [rc.get(k) for k in ('world_size', 'per_gpu_batch', 'accumulative_counts', 'effective_batch')]
        rows.append(
            [
                c['backbone'],
                c['task'],
                str(c['seed']),
                *('' if v is None else str(v) for v in setup),
                lr,
                length,
            ]
            + [rc.get('precision') or '', c.get('mode') or '', c['config_hash'], c['date']]
        )
    return headers, rows


def environment_lines(cells: list[dict[str, Any]]) -> list[str]:
    """The distinct (git commit, versions) the finished cells ran with."""
    seen = []
    for c in cells:
        if c['status'] == 'done':
            line = f'git commit `{c["git_commit"]}`; versions: ' + ', '.join(
                f'{k} {v}' for k, v in c['versions'].items()
            )
            if line not in seen:
                seen.append(line)
    return seen


def markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A GitHub-markdown table (``|`` in cells escaped)."""

    def esc(s: str) -> str:
        return str(s).replace('|', '\\|')

    return ['| ' + ' | '.join(map(esc, headers)) + ' |', '|' + '---|' * len(headers)] + [
        '| ' + ' | '.join(map(esc, r)) + ' |' for r in rows
    ]
