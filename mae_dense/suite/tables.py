"""The leaderboard's numbers: flat records (mean ± std over seeds) and the backbone x benchmark matrix.

Everything here is computed from the results store's cells alone, so a report rebuilt from the store
(``mae-dense report --db``) has the same tables as the pipeline's.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .references import REFERENCES
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


def leaderboard_records(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (backbone, checkpoint, benchmark, metric, mode, config hash), over the seeds.

    Each record: backbone, checkpoint_sha256, model, benchmark, task, metric, mode, value (mean), std (None
    for one seed), n, seeds, config_hash, config, status ('done', 'missing': finished cells that did not
    report the metric, 'failed': no seed finished), reason, failed ([{seed, reason}] of failed seeds).
    """
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        if c['task'] in TASKS:
            groups.setdefault(
                (c['backbone'], c['checkpoint_sha256'], c['task'], c['config_hash'], c.get('mode')), []
            ).append(c)
    records = []
    for (backbone, sha, name, chash, mode), members in groups.items():
        task = TASKS[name]
        done = sorted((c for c in members if c['status'] == 'done'), key=lambda c: c['seed'])
        failed = [dict(seed=c['seed'], reason=c.get('reason')) for c in members if c['status'] == 'failed']
        base = dict(
            backbone=backbone,
            checkpoint_sha256=sha,
            model=next((c['model'] for c in members if c.get('model')), None),
            benchmark=task.benchmark,
            task=name,
            mode=mode,
            config_hash=chash,
            config=next((c['config'] for c in members if c.get('config')), None),
            failed=failed,
        )
        if not done:
            for metric in task.metric_names:  # a failed cell shows as failed under each of its columns
                records.append(
                    dict(
                        base,
                        metric=metric,
                        value=None,
                        std=None,
                        n=0,
                        seeds=[],
                        status='failed',
                        reason=failed[0]['reason'],
                    )
                )
            continue
        names = {m for c in done for m in (*c['metrics'], *c.get('missing', {}))}
        for metric in sorted(names, key=lambda m: column_key(task.benchmark, m)):
            values = [(c['seed'], c['metrics'][metric]) for c in done if metric in c['metrics']]
            reasons = [c['missing'][metric] for c in done if metric in c.get('missing', {})]
            nums = [v for _, v in values]
            records.append(
                dict(
                    base,
                    metric=metric,
                    value=statistics.mean(nums) if nums else None,
                    std=statistics.stdev(nums) if len(nums) > 1 else None,
                    n=len(nums),
                    seeds=[s for s, _ in values],
                    status='done' if nums else 'missing',
                    reason=reasons[0] if reasons and not nums else None,
                )
            )
    return records


@dataclass
class Matrix:
    """Rows = backbones then published rows, columns = benchmark/metric; cells are display strings."""

    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    backbone_rows: int = 0


def _column_key(r: dict) -> tuple:
    return (r['benchmark'], r['metric'], r['mode'], r['config_hash'])


def matrix(records: list[dict[str, Any]], references=REFERENCES) -> Matrix:
    """The backbone x (benchmark, metric) table with mean ± std cells, published rows and notes.

    A column is one (benchmark, metric, probe mode, config hash); the hash shows in its label only where
    two configs ran the same benchmark. A failure from before the config was read (hash unknown) sits
    under every column of its benchmark.
    """
    known = [r for r in records if r['config_hash'] != UNKNOWN]
    columns = sorted({_column_key(r) for r in known}, key=lambda k: (column_key(*k[:2]), k[2] or '', k[3]))
    for r in records:  # failures with no config hash: their own column only where none exists
        if r['config_hash'] == UNKNOWN and not any(c[:3] == _column_key(r)[:3] for c in columns):
            columns.append(_column_key(r))
    for bench, _model, metric, _value, _source in references:
        if not any(c[0] == bench and c[1] == metric for c in columns):
            columns.append((bench, metric, None, None))
    columns.sort(key=lambda k: (column_key(*k[:2]), k[2] or '', k[3] or ''))
    hashes: dict[tuple, set] = {}
    for c in columns:
        hashes.setdefault(c[:3], set()).add(c[3])

    def label(c: tuple) -> str:
        text = f'{c[0]} {c[1]}' + (' (lower is better)' if lower_is_better(c[0], c[1]) else '')
        text += f' ({c[2]})' if c[2] else ''
        return text + (f' [cfg {c[3][:6]}]' if len(hashes[c[:3]]) > 1 and c[3] else '')

    # rows: one per backbone name; a name with two checkpoints gets one row per checkpoint
    shas: dict[str, list[str]] = {}
    for r in records:
        s = shas.setdefault(r['backbone'], [])
        if r['checkpoint_sha256'] not in s and not r['checkpoint_sha256'].startswith(f'{UNKNOWN}:'):
            s.append(r['checkpoint_sha256'])
    row_keys: list[tuple[str, str | None]] = []
    for r in records:
        names = shas[r['backbone']]
        sha = None if len(names) <= 1 else r['checkpoint_sha256']
        if sha is not None and sha.startswith(f'{UNKNOWN}:'):
            sha = names[0]
        if (r['backbone'], sha) not in row_keys:
            row_keys.append((r['backbone'], sha))
    notes: list[str] = []

    def note(text: str) -> str:
        if text not in notes:  # one note for a failed cell, however many metrics it leaves empty
            notes.append(text)
        return f'({notes.index(text) + 1})'

    rows = []
    for backbone, sha in row_keys:
        mine = [
            r
            for r in records
            if r['backbone'] == backbone
            and (sha is None or r['checkpoint_sha256'] in (sha, f'{UNKNOWN}:{backbone}'))
        ]
        model = next((r['model'] for r in mine if r['model']), '')
        row = [backbone + (f' @{sha[:8]}' if sha else ''), model]
        for c in columns:
            hits = [
                r
                for r in mine
                if _column_key(r) == c or (r['config_hash'] == UNKNOWN and _column_key(r)[:3] == c[:3])
            ]
            row.append(_cell(hits, backbone, note))
        rows.append(row)
    n_backbones = len(rows)
    sources: dict[tuple[str, str], dict[tuple, float]] = {}
    for bench, model, metric, value, source in references:
        sources.setdefault((source, model), {})[(bench, metric)] = value
    for (source, model), values in sources.items():
        row = [f'published: {source}', model]
        row += [fmt(values.get(c[:2])) if c[:2] in values else '' for c in columns]
        rows.append(row)
    return Matrix(
        headers=['backbone', 'model', *map(label, columns)], rows=rows, notes=notes, backbone_rows=n_backbones
    )


def _cell(hits: list[dict], backbone: str, note) -> str:
    """One matrix cell from the records that fall in it (normally one)."""
    done = [r for r in hits if r['status'] == 'done']
    if done:
        r = done[0]
        text = fmt(r['value'], r['std'], r['n'])
        if r['failed']:
            seeds = ', '.join(str(f['seed']) for f in r['failed'])
            text += ' ' + note(
                f'{backbone} / {r["benchmark"]} / seed {seeds} failed: {r["failed"][0]["reason"]}'
            )
        return text
    missing = [r for r in hits if r['status'] == 'missing']
    if missing:
        r = missing[0]
        return '— ' + note(f'{backbone} / {r["benchmark"]} {r["metric"]}: {r["reason"]}')
    failed = [r for r in hits if r['status'] == 'failed']
    if failed:
        r = failed[0]
        seeds = ', '.join(str(f['seed']) for f in r['failed'])
        return 'failed ' + note(f'{backbone} / {r["benchmark"]} / seed {seeds}: {r["reason"]}')
    return ''


def published_table() -> tuple[list[str], list[list[str]]]:
    """The published numbers with their sources."""
    headers = ['benchmark', 'model', 'metric', 'published', 'source']
    return headers, [[b, m, me, f'{v:.2f}', s] for b, m, me, v, s in REFERENCES]


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
