"""The leaderboard from the results store: ``leaderboard.md``, ``.json``, ``.html`` and the figures.

The pipeline and ``mae-dense report --db`` both call :func:`write_report`, so a report rebuilt from the
store alone has the same tables.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import html as H
from .figures import bar_charts, curve_charts, slug
from .references import REFERENCES
from .store import ResultStore
from .tables import (
    environment_lines,
    leaderboard_records,
    markdown_table,
    matrix,
    published_table,
    recipes_table,
    results_table,
)

_FIGURE_CAPTIONS = {
    'qualitative': 'image | ground truth | prediction on fixed ADE20K and COCO validation images',
    'reconstruction': 'MAE reconstructions: original | masked | reconstruction | reconstruction + visible',
}
# what leaderboard.json keeps of each cell (its curves are in the figures and the store)
_RUN_KEYS = (
    *('backbone', 'checkpoint_sha256', 'checkpoint', 'model', 'task', 'config', 'config_hash', 'seed'),
    *('status', 'reason', 'mode', 'metrics', 'missing', 'recipe', 'git_commit', 'date', 'pipeline'),
)


def write_report(store: ResultStore, out_dir: str | Path, title: str = 'mae-dense leaderboard') -> Path:
    """Write the report of everything in ``store`` to ``out_dir``; return the markdown file's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = store.cells()
    records = leaderboard_records(cells)
    board = matrix(records)
    figures = bar_charts(records, out_dir) + curve_charts(cells, out_dir)
    for f in store.figures():
        name = f'{f["kind"]}_{slug(f["backbone"])}.png'
        (out_dir / name).write_bytes(f['png'])
        caption = f['caption'] or _FIGURE_CAPTIONS.get(f['kind'], f['kind'])
        figures.append((name, f'{f["backbone"]}: {caption}'))
    pub_headers, pub_rows = published_table()
    rec_headers, rec_rows = recipes_table(cells)
    res_headers, res_rows = results_table(records)
    env = environment_lines(cells)
    notes = [f'({i}) {n}' for i, n in enumerate(board.notes, 1)]

    md = [f'# {title}', '', '## Leaderboard (mean ± std over seeds; published rows below the backbones)', '']
    md += markdown_table(board.headers, board.rows)
    md += ([''] + notes) if notes else []
    md += ['', '## Published numbers', ''] + markdown_table(pub_headers, pub_rows)
    md += ['', '## Recipes (effective)', ''] + markdown_table(rec_headers, rec_rows)
    md += [''] + env if env else []
    md += ['', '## Figures', ''] + [f'![{caption}]({name})' for name, caption in figures]
    md_path = out_dir / 'leaderboard.md'
    md_path.write_text('\n'.join(md) + '\n')

    (out_dir / 'leaderboard.json').write_text(
        json.dumps(
            dict(
                title=title,
                store=str(store.path),
                results=records,
                references=[
                    dict(benchmark=b, model=m, metric=me, value=v, source=s) for b, m, me, v, s in REFERENCES
                ],
                runs=[{k: c.get(k) for k in _RUN_KEYS} for c in cells],
                figures=[name for name, _ in figures],
            ),
            indent=2,
            default=str,
        )
    )

    classes = [''] * board.backbone_rows + ['published'] * (len(board.rows) - board.backbone_rows)
    sections = [
        (
            'Leaderboard (mean ± std over seeds)',
            H.table_html('matrix', board.headers, board.rows, classes) + H.paragraph(notes),
        ),
        (
            'Results (one record per backbone, benchmark, metric)',
            H.table_html('results', res_headers, res_rows),
        ),
        ('Published numbers', H.table_html('published', pub_headers, pub_rows)),
        ('Recipes (effective)', H.table_html('recipes', rec_headers, rec_rows) + H.paragraph(env)),
        (
            'Figures',
            ''.join(H.figure_html((out_dir / name).read_bytes(), caption) for name, caption in figures),
        ),
    ]
    (out_dir / 'leaderboard.html').write_text(H.page(title, sections))
    return md_path
