"""The report's figures: one bar chart per benchmark, training curves per run, qualitative panels.

matplotlib's object API (``Figure``, no pyplot state), numpy, PIL and pycocotools only. Every function
returns or writes PNGs; nothing here reads a config.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .references import REFERENCES
from .tables import column_key
from .tasks import TASKS

# one panel row: a title and three (H, W, 3) uint8 pictures (image, ground truth, prediction)
Row = tuple[str, list[np.ndarray]]
PANEL_COLUMNS = ('image', 'ground truth', 'prediction')
SCORE_THR = 0.3  # detections drawn in the COCO panel


def slug(text: str) -> str:
    """A file-name-safe version of a name."""
    return re.sub(r'[^A-Za-z0-9._-]+', '_', text).strip('_') or 'x'


def _figure(**kw: Any):
    import matplotlib

    matplotlib.use('Agg')
    from matplotlib.figure import Figure

    return Figure(**kw)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=100, bbox_inches='tight')
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ bar charts
def bar_charts(records: list[dict[str, Any]], out_dir: Path, references=REFERENCES) -> list[tuple[str, str]]:
    """One PNG per benchmark: every backbone's mean (± std over seeds) beside the published numbers.

    Returns:
        ``[(file name, caption), ...]``.
    """
    written = []
    benchmarks = sorted(
        {r['benchmark'] for r in records if r['value'] is not None and r['status'] != 'sweep point'},
        key=lambda b: column_key(b, ''),
    )
    for bench in benchmarks:
        mine = [
            r
            for r in records
            if r['benchmark'] == bench and r['value'] is not None and r['status'] != 'sweep point'
        ]
        refs = [ref for ref in references if ref.benchmark == bench]
        metrics = sorted(
            {r['metric'] for r in mine} | {ref.metric for ref in refs}, key=lambda m: column_key(bench, m)
        )
        hashes = {r['config_hash'] for r in mine}
        series: dict[str, dict[str, tuple[float, float]]] = {}
        for r in mine:
            label = r['backbone'] + (f' ({r["mode"]})' if r['mode'] else '')
            label += f' [cfg {r["config_hash"][:6]}]' if len(hashes) > 1 else ''
            series.setdefault(label, {})[r['metric']] = (r['value'], r['std'] or 0.0)
        published: dict[str, dict[str, tuple[float, float]]] = {}
        for ref in refs:
            label = f'published {ref.label} {ref.model}: {ref.source}'
            published.setdefault(label, {})[ref.metric] = (ref.value, 0.0)
        everything = [(k, v, False) for k, v in series.items()] + [(k, v, True) for k, v in published.items()]
        fig = _figure(
            figsize=(max(6.0, 1.2 + 0.45 * len(everything) * len(metrics)), 4.2), layout='constrained'
        )
        ax = fig.subplots()
        width = 0.8 / len(everything)
        x = np.arange(len(metrics))
        for i, (label, values, is_ref) in enumerate(everything):
            ys = [values.get(m, (np.nan, 0.0)) for m in metrics]
            bars = ax.bar(
                x + (i - (len(everything) - 1) / 2) * width,
                [y for y, _ in ys],
                width,
                yerr=[e for _, e in ys] if not is_ref else None,
                capsize=3,
                label=label,
                hatch='//' if is_ref else None,
                alpha=0.55 if is_ref else 0.95,
                edgecolor='black' if is_ref else None,
                linewidth=0.5,
            )
            ax.bar_label(bars, fmt='%.1f', fontsize=7, padding=2)
        ax.set_xticks(x, metrics)
        ax.set_ylabel('points')
        ax.set_title(f'{bench}: backbones (mean ± std over seeds) and published numbers (hatched)')
        ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.0, 1.0))
        name = f'bars_{slug(bench)}.png'
        fig.savefig(out_dir / name, dpi=100, bbox_inches='tight')
        written.append((name, f'{bench}: every backbone beside the published numbers'))
    return written


# ---------------------------------------------------------------------------------------------- curves
def curves_figure(task: str, runs: list[dict[str, Any]]):
    """Training loss (left) and validation metrics at their iterations (right): one line per run and seed."""
    bench = TASKS[task].benchmark if task in TASKS else ''  # (pretraining: the loss only)
    metric_names = sorted(
        {k for c in runs for k in c['curves'] if k != 'loss'}, key=lambda m: column_key(bench, m)
    )
    fig = _figure(figsize=(11 if metric_names else 6, 4), layout='constrained')
    axes = fig.subplots(1, 2 if metric_names else 1, squeeze=False)[0]
    for c in runs:
        run = f'{c["backbone"]} seed {c["seed"]}'
        if c['curves'].get('loss'):
            steps, values = zip(*c['curves']['loss'])
            axes[0].plot(steps, values, label=run, linewidth=1, marker='.')
        for m in metric_names:
            if c['curves'].get(m):
                steps, values = zip(*c['curves'][m])
                axes[1].plot(steps, values, marker='o', label=f'{run}: {m}')
    axes[0].set(xlabel='iteration', ylabel='training loss', title=f'{task}: loss per run')
    axes[0].legend(fontsize=7)
    if metric_names:
        axes[1].set(
            xlabel='iteration', ylabel='points', title=f'{task}: validation metrics at their iteration'
        )
        axes[1].legend(fontsize=7)
    return fig


def curve_charts(cells: list[dict[str, Any]], out_dir: Path) -> list[tuple[str, str]]:
    """One :func:`curves_figure` per task (pretraining included) over every finished run with curves."""
    written = []
    tasks: dict[str, list[dict]] = {}
    for c in cells:
        if c['status'] == 'done' and c['curves']:
            tasks.setdefault(c['task'], []).append(c)
    for task, runs in tasks.items():
        name = f'curves_{slug(task)}.png'
        curves_figure(task, runs).savefig(out_dir / name, dpi=100, bbox_inches='tight')
        written.append((name, f'{task}: training loss and validation metrics of every run and seed'))
    return written


# --------------------------------------------------------------------------------- qualitative panels
def palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8 fixed colours; class 0 (ADE20K 'other', ignored) is black."""
    colours = np.random.default_rng(7).integers(40, 256, size=(n, 3), dtype=np.uint8)
    colours[0] = 0
    return colours


def colorize(label: np.ndarray) -> np.ndarray:
    """(H, W) integer labels -> (H, W, 3) uint8 colours."""
    return palette()[np.clip(label, 0, 255).astype(np.int64)]


def _read_rgb(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert('RGB')
        if size is not None and im.size != size:
            im = im.resize(size, Image.Resampling.BILINEAR)
        return np.asarray(im)


def _read_label(path: Path, size: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as im:
        if im.size != size:
            im = im.resize(size, Image.Resampling.NEAREST)
        return np.asarray(im)


def segmentation_rows(
    pred_dir: Path, image_dir: Path, label_dir: Path, count: int, image_suffix: str = '.jpg'
) -> list[Row]:
    """ADE20K rows for the first ``count`` label PNGs of a test (``--out``): image, ground truth, prediction.

    Both label maps use the annotation convention (0 = other, 1..150 the classes) and the same colours.
    """
    rows = []
    for pred in sorted(pred_dir.glob('*.png'))[:count]:
        image_path = image_dir / (pred.stem + image_suffix)
        image = _read_rgb(image_path)
        size = (image.shape[1], image.shape[0])
        gt = _read_label(label_dir / pred.name, size)
        rows.append((f'ADE20K {pred.stem}', [image, colorize(gt), colorize(_read_label(pred, size))]))
    return rows


def _overlay(
    image: np.ndarray, objects: list[tuple[int, np.ndarray | None, Sequence[float], str]]
) -> np.ndarray:
    """Masks blended at 50% and boxes with their label drawn over a copy of ``image``."""
    out = image.astype(np.float32).copy()
    colours = palette()
    for category, mask, _box, _text in objects:
        if mask is not None and mask.shape == out.shape[:2]:
            out[mask.astype(bool)] = 0.5 * out[mask.astype(bool)] + 0.5 * colours[category % 256]
    im = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for category, _mask, (x, y, w, h), text in objects:
        colour = tuple(int(v) for v in colours[category % 256])
        draw.rectangle([x, y, x + w, y + h], outline=colour, width=2)
        draw.text((x + 2, y + 1), text, fill=colour)
    return np.asarray(im)


def detection_rows(ann_file: Path, image_dir: Path, pred_prefix: Path, count: int) -> list[Row]:
    """COCO rows for the first ``count`` images of ``ann_file``: image, ground truth, detections.

    Detections come from the test's result files (``<prefix>.segm.json``, else ``<prefix>.bbox.json``);
    those scoring at least :data:`SCORE_THR` are drawn, or the best three when none does (the title says so).
    """
    import pycocotools.mask as mask_utils
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco = COCO(str(ann_file))
    names = {c['id']: c['name'] for c in coco.loadCats(coco.getCatIds())}
    results_file = next(
        (f for f in (Path(f'{pred_prefix}.segm.json'), Path(f'{pred_prefix}.bbox.json')) if f.is_file()), None
    )
    results = json.loads(results_file.read_text()) if results_file else []
    rows = []
    for image_id in coco.getImgIds()[:count]:
        info = coco.loadImgs(image_id)[0]
        image = _read_rgb(image_dir / info['file_name'])
        gt = [
            (a['category_id'], coco.annToMask(a), a['bbox'], names.get(a['category_id'], '?'))
            for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        ]
        dets = sorted((r for r in results if r['image_id'] == image_id), key=lambda r: -r['score'])
        shown = [r for r in dets if r['score'] >= SCORE_THR]
        note = f'score >= {SCORE_THR}'
        if not shown:
            shown = dets[:3]
            note = f'best {len(shown)}, all below {SCORE_THR}' if shown else 'no detection'
        pred = [
            (
                r['category_id'],
                mask_utils.decode(r['segmentation']) if 'segmentation' in r else None,
                r['bbox'],
                f'{names.get(r["category_id"], "?")} {r["score"]:.2f}',
            )
            for r in shown
        ]
        rows.append(
            (f'COCO {info["file_name"]} ({note})', [image, _overlay(image, gt), _overlay(image, pred)])
        )
    return rows


def panel_png(rows: list[Row], title: str, columns: Sequence[str] = PANEL_COLUMNS) -> bytes:
    """A grid of pictures: one row per :data:`Row`, ``columns`` as the column titles."""
    fig = _figure(figsize=(3.0 * len(columns), 2.6 * len(rows)), layout='constrained')
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    for r, (row_title, pictures) in enumerate(rows):
        for c, picture in enumerate(pictures):
            ax = axes[r][c]
            ax.imshow(picture)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c])
        axes[r][0].set_ylabel(row_title, fontsize=8)
    fig.suptitle(title)
    return _png(fig)
