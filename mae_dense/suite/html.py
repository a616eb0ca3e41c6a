"""The report as one self-contained HTML page: tables with sortable columns, figures inline as data URIs."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

# Click a column header to sort by it (numbers by value, the rest as text; again to reverse).
_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach((th, col) => {
  th.addEventListener('click', () => {
    const body = th.closest('table').tBodies[0];
    const asc = th.dataset.order !== 'asc';
    th.closest('tr').querySelectorAll('th').forEach(h => delete h.dataset.order);
    th.dataset.order = asc ? 'asc' : 'desc';
    const key = tr => {
      const text = tr.cells[col].textContent.trim();
      const num = parseFloat(text);
      return Number.isNaN(num) ? text : num;
    };
    const rows = Array.from(body.rows).sort((a, b) => {
      const x = key(a), y = key(b);
      const c = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === 'number' ? -1 : 1);
      return asc ? c : -c;
    });
    rows.forEach(r => body.appendChild(r));
  });
});
"""
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f2f2f2; cursor: pointer; user-select: none; }
th[data-order=asc]::after { content: ' \\25B2'; } th[data-order=desc]::after { content: ' \\25BC'; }
tr.published td { color: #555; font-style: italic; }
figure { display: inline-block; margin: 1em; vertical-align: top; }
img { max-width: 100%; border: 1px solid #ddd; }
code { background: #f6f6f6; }
"""


def table_html(
    table_id: str, headers: Sequence[str], rows: Sequence[Sequence[str]], row_classes: Sequence[str] = ()
) -> str:
    """A sortable table; ``row_classes[i]`` is the CSS class of row i (e.g. ``'published'``)."""
    head = ''.join(f'<th>{html.escape(h)}</th>' for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = row_classes[i] if i < len(row_classes) and row_classes[i] else ''
        cells = ''.join(f'<td>{html.escape(str(c))}</td>' for c in row)
        body.append(f'<tr class="{cls}">{cells}</tr>' if cls else f'<tr>{cells}</tr>')
    return (
        f'<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead>'
        f'<tbody>{"".join(body)}</tbody></table>'
    )


def figure_html(png: bytes, caption: str) -> str:
    """A PNG inline as a data URI, with its caption."""
    data = base64.b64encode(png).decode('ascii')
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
        f'<figcaption>{html.escape(caption)}</figcaption></figure>'
    )


def page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """The whole page: ``sections`` are (heading, inner HTML)."""
    parts = [f'<h2>{html.escape(h)}</h2>\n{body}' for h, body in sections]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n'
        f'<h1>{html.escape(title)}</h1>\n'
        + '\n'.join(parts)
        + f'\n<script>{_SORT_JS}</script>\n</body></html>\n'
    )


def paragraph(lines: Sequence[str]) -> str:
    """Plain lines as paragraphs."""
    return ''.join(f'<p>{html.escape(line)}</p>' for line in lines)
