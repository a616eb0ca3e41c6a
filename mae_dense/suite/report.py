"""The leaderboard from the results store: ``leaderboard.md``, ``.json``, ``.html`` and the figures.

The pipeline and ``mae-dense report --db`` both call :func:`write_report`, so a report rebuilt from the
store alone has the same tables.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from . import html as H
from .board import Matrix, matrix
from .figures import bar_charts, curve_charts, slug
from .references import REFERENCES
from .store import ResultStore
from .tables import (
    cards_table,
    environment_lines,
    leaderboard_records,
    markdown_table,
    published_table,
    recipes_table,
    results_table,
    sweeps_table,
)

_FIGURE_CAPTIONS = {
    'qualitative': 'image | ground truth | prediction on fixed ADE20K and COCO validation images',
    'reconstruction': 'MAE reconstructions: original | masked | reconstruction | reconstruction + visible',
}
# what leaderboard.json keeps of each cell (its curves are in the figures and the store)
_RUN_KEYS = (
    *('backbone', 'checkpoint_sha256', 'checkpoint', 'model', 'task', 'config', 'config_hash', 'seed'),
    *('status', 'reason', 'mode', 'metrics', 'missing', 'recipe', 'card', 'git_commit', 'date', 'pipeline'),
)


@dataclass(frozen=True)
class _Sections:
    """What the markdown and the HTML page both show, in the same order."""

    title: str
    board: Matrix
    notes: list[str]  # the matrix's numbered notes
    tables: dict[str, tuple[list[str], list[list[str]]]]  # published, cards, sweeps, recipes, results
    env: list[str]
    figures: list[tuple[str, str]]  # (file name, caption)


def _write_figures(
    store: ResultStore, cells: list[dict], records: list[dict], out_dir: Path
) -> list[tuple[str, str]]:
    """Draw the charts and write the stored figures into ``out_dir``: their (file name, caption)."""
    figures = bar_charts(records, out_dir) + curve_charts(cells, out_dir)
    for f in store.figures():
        name = f'{f["kind"]}_{slug(f["backbone"])}.png'
        (out_dir / name).write_bytes(f['png'])
        caption = f['caption'] or _FIGURE_CAPTIONS.get(f['kind'], f['kind'])
        figures.append((name, f'{f["backbone"]}: {caption}'))
    return figures


def _write_markdown(out_dir: Path, r: _Sections) -> Path:
    """``leaderboard.md``: the matrix and its notes, the published numbers, the recipes, the figures."""
    md = [
        f'# {r.title}',
        '',
        '## Leaderboard (mean ± std over seeds; published rows below the backbones)',
        '',
    ]
    md += markdown_table(r.board.headers, r.board.rows)
    md += ([''] + r.notes) if r.notes else []
    md += ['', '## Protocols (numbers are ranked together only within one)', ''] + r.board.protocols
    md += ['', '## Protocol cards', ''] + markdown_table(*r.tables['cards'])
    if r.tables['sweeps'][1]:
        md += ['', '## Per-row searches (every point kept)', ''] + markdown_table(*r.tables['sweeps'])
    md += ['', '## Published numbers', ''] + markdown_table(*r.tables['published'])
    md += ['', '## Recipes (effective)', ''] + markdown_table(*r.tables['recipes'])
    md += [''] + r.env if r.env else []
    md += ['', '## Figures', ''] + [f'![{caption}]({name})' for name, caption in r.figures]
    md_path = out_dir / 'leaderboard.md'
    md_path.write_text('\n'.join(md) + '\n')
    return md_path


def _write_json(
    out_dir: Path,
    title: str,
    store: ResultStore,
    records: list[dict],
    cells: list[dict],
    figures: list[tuple[str, str]],
    board_protocols: list[str],
) -> None:
    """``leaderboard.json``: the records, the published numbers, every run's summary, the figure names."""
    (out_dir / 'leaderboard.json').write_text(
        json.dumps(
            dict(
                title=title,
                store=str(store.path),
                results=records,
                protocols=board_protocols,
                references=[asdict(ref) for ref in REFERENCES],
                runs=[{k: c.get(k) for k in _RUN_KEYS} for c in cells],
                figures=[name for name, _ in figures],
            ),
            indent=2,
            default=str,
        )
    )


def _write_html(out_dir: Path, r: _Sections) -> None:
    """``leaderboard.html``: the markdown's sections plus the flat results, figures inlined."""
    classes = [''] * r.board.backbone_rows + ['published'] * (len(r.board.rows) - r.board.backbone_rows)
    sections = [
        (
            'Leaderboard (mean ± std over seeds)',
            H.table_html('matrix', r.board.headers, r.board.rows, classes)
            + H.paragraph(r.notes)
            + H.paragraph(r.board.protocols),
        ),
        ('Protocol cards', H.table_html('cards', *r.tables['cards'])),
        ('Per-row searches (every point kept)', H.table_html('sweeps', *r.tables['sweeps'])),
        (
            'Results (one record per backbone, benchmark, metric)',
            H.table_html('results', *r.tables['results']),
        ),
        ('Published numbers', H.table_html('published', *r.tables['published'])),
        ('Recipes (effective)', H.table_html('recipes', *r.tables['recipes']) + H.paragraph(r.env)),
        (
            'Figures',
            ''.join(H.figure_html((out_dir / name).read_bytes(), caption) for name, caption in r.figures),
        ),
    ]
    (out_dir / 'leaderboard.html').write_text(H.page(r.title, sections))


def write_report(store: ResultStore, out_dir: str | Path, title: str = 'mae-dense leaderboard') -> Path:
    """Write the report of everything in ``store`` to ``out_dir``; return the markdown file's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = store.cells()
    records = leaderboard_records(cells)
    board = matrix(records)
    figures = _write_figures(store, cells, records, out_dir)
    sections = _Sections(
        title=title,
        board=board,
        notes=[f'({i}) {n}' for i, n in enumerate(board.notes, 1)],
        tables=dict(
            published=published_table(),
            cards=cards_table(records),
            sweeps=sweeps_table(records),
            recipes=recipes_table(cells),
            results=results_table(records),
        ),
        env=environment_lines(cells),
        figures=figures,
    )
    md_path = _write_markdown(out_dir, sections)
    _write_json(out_dir, title, store, records, cells, figures, board.protocols)
    _write_html(out_dir, sections)
    return md_path
