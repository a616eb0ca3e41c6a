"""The leaderboard's numbers: flat records (mean ± std over seeds) and the backbone x benchmark matrix.

Everything here is computed from the results store's cells alone, so a report rebuilt from the store
(``mae-dense report --db``) has the same tables as the pipeline's.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
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
    """What the records of one group share: who ran what, and the seeds that failed."""
    backbone, sha, name, chash, mode = group
    return dict(
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
    return dict(
        base,
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
    for one seed), n, seeds, config_hash, config, status ('done', 'missing': finished cells that did not
    report the metric, 'failed': no seed finished), reason, failed ([{seed, reason}] of failed seeds).
    """
    records = []
    for group, members in _group_cells(cells).items():
        base = _record_base(group, members)
        done = sorted((c for c in members if c['status'] == 'done'), key=lambda c: c['seed'])
        if done:
            records += _metric_records(base, done)
        else:  # a failed cell shows as failed under each of its columns
            for metric in TASKS[group[2]].metric_names:
                records.append(_record(base, metric, [], 'failed', base['failed'][0]['reason']))
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


def _in_column(r: dict, c: tuple) -> bool:
    """Whether record ``r`` shows in column ``c``; one with no config hash, in every column of its
    (benchmark, metric, mode)."""
    return _column_key(r) == c or (r['config_hash'] == UNKNOWN and _column_key(r)[:3] == c[:3])


def _unknown_checkpoint(sha: str) -> bool:
    """A failure from before the checkpoint was hashed: ``unknown:<backbone>``."""
    return sha.startswith(f'{UNKNOWN}:')


def _columns(records: list[dict[str, Any]], references) -> list[tuple]:
    """The (benchmark, metric, mode, config hash) columns of the records and published numbers, in order."""
    known = [r for r in records if r['config_hash'] != UNKNOWN]
    columns = sorted({_column_key(r) for r in known}, key=lambda k: (column_key(*k[:2]), k[2] or '', k[3]))
    for r in records:  # failures with no config hash: their own column only where none exists
        if r['config_hash'] == UNKNOWN and not any(_in_column(r, c) for c in columns):
            columns.append(_column_key(r))
    for bench, _model, metric, _value, _source in references:
        if not any(c[0] == bench and c[1] == metric for c in columns):
            columns.append((bench, metric, None, None))
    columns.sort(key=lambda k: (column_key(*k[:2]), k[2] or '', k[3] or ''))
    return columns


def _column_labels(columns: list[tuple]) -> list[str]:
    """The columns' headers; a config hash shows only where two configs ran the same benchmark and metric."""
    hashes: dict[tuple, set] = {}
    for c in columns:
        hashes.setdefault(c[:3], set()).add(c[3])
    labels = []
    for c in columns:
        text = f'{c[0]} {c[1]}' + (' (lower is better)' if lower_is_better(c[0], c[1]) else '')
        text += f' ({c[2]})' if c[2] else ''
        labels.append(text + (f' [cfg {c[3][:6]}]' if len(hashes[c[:3]]) > 1 and c[3] else ''))
    return labels


def _row_keys(records: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """(backbone, checkpoint) of each row: one per backbone name (checkpoint None), but a name with two
    checkpoints gets one row per checkpoint."""
    shas: dict[str, list[str]] = {}
    for r in records:
        s = shas.setdefault(r['backbone'], [])
        if r['checkpoint_sha256'] not in s and not _unknown_checkpoint(r['checkpoint_sha256']):
            s.append(r['checkpoint_sha256'])
    row_keys: list[tuple[str, str | None]] = []
    for r in records:
        names = shas[r['backbone']]
        sha = None if len(names) <= 1 else r['checkpoint_sha256']
        if sha is not None and _unknown_checkpoint(sha):
            sha = names[0]
        if (r['backbone'], sha) not in row_keys:
            row_keys.append((r['backbone'], sha))
    return row_keys


def _backbone_row(
    records: list[dict[str, Any]],
    backbone: str,
    sha: str | None,
    columns: list[tuple],
    note: Callable[[str], str],
) -> list[str]:
    """The row of ``backbone`` at checkpoint ``sha`` (None: its only one): name, model, a cell per column."""
    mine = [
        r
        for r in records
        if r['backbone'] == backbone
        and (sha is None or r['checkpoint_sha256'] in (sha, f'{UNKNOWN}:{backbone}'))
    ]
    model = next((r['model'] for r in mine if r['model']), '')
    row = [backbone + (f' @{sha[:8]}' if sha else ''), model]
    return row + [_cell([r for r in mine if _in_column(r, c)], backbone, note) for c in columns]


def _published_rows(references, columns: list[tuple]) -> list[list[str]]:
    """One row per (source, model) of the published numbers, filled in the columns of their metrics."""
    sources: dict[tuple[str, str], dict[tuple, float]] = {}
    for bench, model, metric, value, source in references:
        sources.setdefault((source, model), {})[(bench, metric)] = value
    rows = []
    for (source, model), values in sources.items():
        row = [f'published: {source}', model]
        row += [fmt(values.get(c[:2])) if c[:2] in values else '' for c in columns]
        rows.append(row)
    return rows


def matrix(records: list[dict[str, Any]], references=REFERENCES) -> Matrix:
    """The backbone x (benchmark, metric) table with mean ± std cells, published rows and notes.

    A column is one (benchmark, metric, probe mode, config hash); the hash shows in its label only where
    two configs ran the same benchmark. A failure from before the config was read (hash unknown) sits
    under every column of its benchmark.
    """
    columns = _columns(records, references)
    notes: list[str] = []

    def note(text: str) -> str:
        if text not in notes:  # one note for a failed cell, however many metrics it leaves empty
            notes.append(text)
        return f'({notes.index(text) + 1})'

    rows = [_backbone_row(records, backbone, sha, columns, note) for backbone, sha in _row_keys(records)]
    n_backbones = len(rows)
    rows += _published_rows(references, columns)
    return Matrix(
        headers=['backbone', 'model', *_column_labels(columns)],
        rows=rows,
        notes=notes,
        backbone_rows=n_backbones,
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
