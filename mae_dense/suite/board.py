"""The leaderboard matrix: backbones x (benchmark, metric), grouped by protocol, published rows beside.

A column is one (benchmark, metric, probe mode, protocol); the columns of one protocol stand together (a
column group), and every backbone measured under that protocol fills the same column whatever its size,
source or config hash. A published number goes into the column of its own protocol; where ours were
measured under another, it stands in the nearest column of its metric with the difference named in a note.
A record without a card (a failure before its config was read, or a store from before cards) falls under
every column of its (benchmark, metric, mode).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .cards import Protocol, describe_protocol, protocol_differences
from .references import REFERENCES, Published
from .tables import UNKNOWN, column_key, fmt, lower_is_better

__all__ = ['Matrix', 'matrix']


@dataclass
class Matrix:
    """Rows = backbones then published rows, columns = benchmark/metric/protocol; cells are display strings.

    ``protocols``: one line per column group, naming its columns and its protocol.
    """

    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    backbone_rows: int = 0
    protocols: list[str] = field(default_factory=list)


def _protocol(r: dict) -> Protocol | None:
    return Protocol.of(r['protocol']) if r.get('protocol') else None


def _column_key(r: dict) -> tuple:
    p = _protocol(r)
    return (r['benchmark'], r['metric'], r['mode'], p.key() if p else None)


def _in_column(r: dict, c: tuple) -> bool:
    """Whether record ``r`` shows in column ``c``; one without a protocol in every column of its
    (benchmark, metric, mode)."""
    key = _column_key(r)
    return key == c or (key[3] is None and key[:3] == c[:3])


def _unknown_checkpoint(sha: str) -> bool:
    """A failure from before the checkpoint was hashed: ``unknown:<backbone>``."""
    return sha.startswith(f'{UNKNOWN}:')


def _columns(records: list[dict[str, Any]], references) -> list[tuple]:
    """The (benchmark, metric, mode, protocol key) columns of the records and published numbers, in order:
    benchmark order, then each protocol's columns together (protocols in the order the records first
    show them), then the metric order."""
    columns = list(dict.fromkeys(_column_key(r) for r in records if _protocol(r) is not None))
    for r in records:  # no protocol: their own column only where none of their metric exists
        if _protocol(r) is None and not any(_in_column(r, c) for c in columns):
            columns.append(_column_key(r))
    for ref in references:  # a published number with no column of its metric gets its protocol's
        if not any(c[0] == ref.benchmark and c[1] == ref.metric for c in columns):
            columns.append((ref.benchmark, ref.metric, None, ref.protocol.key()))
    seen = list(dict.fromkeys((c[2], c[3]) for c in columns))  # (mode, protocol) in order of appearance

    def order(c: tuple) -> tuple:
        return (column_key(c[0], '')[:2], c[3] is None, seen.index((c[2], c[3])), column_key(c[0], c[1]))

    return sorted(dict.fromkeys(columns), key=order)


def _groups(columns: list[tuple]) -> dict[tuple, int]:
    """A number per distinct protocol of the columns (1, 2, ...), in column order."""
    ids: dict[tuple, int] = {}
    for c in columns:
        if c[3] is not None and c[3] not in ids:
            ids[c[3]] = len(ids) + 1
    return ids


def _column_labels(columns: list[tuple], ids: dict[tuple, int]) -> list[str]:
    """The headers; the protocol's number shows where one metric is measured under several protocols."""
    protocols: dict[tuple, set] = {}
    for c in columns:
        protocols.setdefault(c[:3], set()).add(c[3])
    labels = []
    for c in columns:
        text = f'{c[0]} {c[1]}' + (' (lower is better)' if lower_is_better(c[0], c[1]) else '')
        text += f' ({c[2]})' if c[2] else ''
        labels.append(text + (f' [P{ids[c[3]]}]' if len(protocols[c[:3]]) > 1 and c[3] is not None else ''))
    return labels


def _protocol_lines(columns: list[tuple], ids: dict[tuple, int], labels: list[str]) -> list[str]:
    """'P1 (ADE20K mIoU, ADE20K aAcc): ade20k: fine-tuned, UPerHead+Feature2Pyramid on ...' per group."""
    lines = []
    for key, n in ids.items():
        names = ', '.join(label for c, label in zip(columns, labels, strict=True) if c[3] == key)
        lines.append(f'P{n} ({names}): {describe_protocol(Protocol(*key))}')
    return lines


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


def _cell(hits: list[dict], backbone: str, note: Callable[[str], str]) -> str:
    """One matrix cell from the records that fall in it (normally one; another config of the same
    protocol is named in a note)."""
    done = [r for r in hits if r['status'] == 'done']
    if done:
        r = done[0]
        text = fmt(r['value'], r['std'], r['n'])
        if (r.get('card') or {}).get('sweep'):
            text += ' ' + note(f'{backbone} / {r["benchmark"]}: {r["card"]["lr_searched"]}')
        for other in done[1:]:
            text += ' ' + note(
                f'{backbone} / {r["benchmark"]} {r["metric"]}: also config {other["config_hash"]} under this '
                f'protocol: {fmt(other["value"], other["std"], other["n"])}'
            )
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


def _backbone_row(
    records: list[dict[str, Any]], backbone: str, sha: str | None, columns: list[tuple], note
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


def _place(ref: Published, columns: list[tuple]) -> tuple[int, list[str]]:
    """The column of a published number and the protocol differences to name (none: same protocol)."""
    same = [i for i, c in enumerate(columns) if c[:2] == (ref.benchmark, ref.metric)]
    for i in same:
        if columns[i][3] == ref.protocol.key():
            return i, []
    i = same[0]
    if columns[i][3] is None:
        return i, [f'ours have no protocol card; published: {describe_protocol(ref.protocol)}']
    return i, protocol_differences(ref.protocol, Protocol(*columns[i][3]))


def _published_rows(references, columns: list[tuple], note) -> list[list[str]]:
    """One row per (source, pre-training, model) of the published numbers, each in its protocol's column
    or, under another protocol, in its metric's column with the difference named."""
    rows: dict[tuple[str, str, str], list[str]] = {}
    for ref in references:
        row = rows.setdefault(
            (ref.source, ref.label, ref.model),
            [f'published: {ref.label}, {ref.source}', ref.model] + [''] * len(columns),
        )
        i, differences = _place(ref, columns)
        text = fmt(ref.value)
        if differences:
            text += ' ' + note(f'{ref.source} ({ref.label}): another protocol: ' + '; '.join(differences))
        row[2 + i] = text
    return list(rows.values())


def matrix(records: list[dict[str, Any]], references=REFERENCES) -> Matrix:
    """The backbone x (benchmark, metric) table grouped by protocol: mean ± std cells, published rows,
    notes and one line per protocol. Sweep points that were not chosen stay out (their own table)."""
    records = [r for r in records if r['status'] != 'sweep point']
    columns = _columns(records, references)
    ids = _groups(columns)
    labels = _column_labels(columns, ids)
    notes: list[str] = []

    def note(text: str) -> str:
        if text not in notes:  # one note for a failed cell, however many metrics it leaves empty
            notes.append(text)
        return f'({notes.index(text) + 1})'

    rows = [_backbone_row(records, backbone, sha, columns, note) for backbone, sha in _row_keys(records)]
    n_backbones = len(rows)
    rows += _published_rows(references, columns, note)
    return Matrix(
        headers=['backbone', 'model', *labels],
        rows=rows,
        notes=notes,
        backbone_rows=n_backbones,
        protocols=_protocol_lines(columns, ids, labels),
    )
