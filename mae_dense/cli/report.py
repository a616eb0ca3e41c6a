"""The leaderboard: reproduced numbers beside the published ones, with the recipe of every run and plots."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

# (benchmark, model, metric, value, source): the published numbers the report always shows.
REFERENCES: tuple[tuple[str, str, str, float, str], ...] = (
    ('ADE20K', 'ViT-B', 'mIoU', 48.1, 'MAE paper (Table 3)'),
    ('ADE20K', 'ViT-L', 'mIoU', 53.6, 'MAE paper (Table 3)'),
    ('ADE20K', 'ViT-B', 'mIoU', 48.13, 'mmseg 0.x upernet_mae-base_fp16_8x2_512x512_160k_ade20k'),
    ('ADE20K', 'ViT-B', 'mIoU ms+flip', 48.70, 'mmseg 0.x upernet_mae-base_fp16_512x512_160k_ade20k_ms'),
    ('COCO', 'ViT-B', 'box AP', 50.3, 'MAE paper (Table 4)'),
    ('COCO', 'ViT-B', 'mask AP', 44.9, 'MAE paper (Table 4)'),
    ('COCO', 'ViT-L', 'box AP', 53.3, 'MAE paper (Table 4)'),
    ('COCO', 'ViT-L', 'mask AP', 47.2, 'MAE paper (Table 4)'),
    ('COCO', 'ViT-B', 'box AP', 51.6, 'detectron2 ViTDet, 100 ep'),
    ('COCO', 'ViT-B', 'mask AP', 45.9, 'detectron2 ViTDet, 100 ep'),
    ('COCO', 'ViT-L', 'box AP', 55.5, 'detectron2 ViTDet, 100 ep'),
    ('COCO', 'ViT-L', 'mask AP', 49.2, 'detectron2 ViTDet, 100 ep'),
    ('COCO', 'ViT-B', 'box AP', 51.6, 'mmdet ViTDet'),
    ('COCO', 'ViT-B', 'mask AP', 45.7, 'mmdet ViTDet'),
)
_WIDTHS = {768: 'ViT-B', 1024: 'ViT-L', 1280: 'ViT-H'}


def _model_name(config: str) -> str:
    from mmengine.config import Config

    cfg = Config.fromfile(config)
    width = cfg.model.backbone.get('embed_dim')
    return _WIDTHS.get(width, f'ViT {width}-d (toy)')


def _run_metrics(stage: str, record: dict) -> dict[str, float]:
    """Metric name -> value in points for one run."""
    res = record['results']
    if stage == 'ade20k':
        out = {'mIoU': res['single_scale']['mIoU'], 'aAcc': res['single_scale']['aAcc']}
        if 'ms_flip' in res:
            out['mIoU ms+flip'] = res['ms_flip']['mIoU']
        return out
    ss = res['single_scale']
    return {
        'box AP': 100 * ss.get('coco/bbox_mAP', float('nan')),
        'mask AP': 100 * ss.get('coco/segm_mAP', float('nan')),
    }


def _num(x: float | None) -> str:
    return '—' if x is None else f'{x:.3g}'


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f'{values[0]:.2f}'
    return f'{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (n={len(values)})'


def _scalars(work: Path) -> list[dict]:
    rows = []
    for f in sorted(work.glob('*/vis_data/scalars.json')):
        rows += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return rows


def _plots(work_dir: Path, stages: list[str], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for stage in stages:
        rows = [r for r in _scalars(work_dir / stage) if 'loss' in r]
        if rows:
            ax.plot([r['step'] for r in rows], [r['loss'] for r in rows], label=stage)
    if ax.lines:
        ax.set(xlabel='iteration', ylabel='training loss', title='Loss curves')
        ax.legend()
        fig.savefig(out_dir / 'loss_curves.png', dpi=100, bbox_inches='tight')
        written.append('loss_curves.png')
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for stage in stages:
        for key, label in (('mIoU', 'mIoU'), ('coco/bbox_mAP', 'box AP'), ('coco/segm_mAP', 'mask AP')):
            rows = [r for r in _scalars(work_dir / stage) if key in r]
            if rows:
                scale = 100 if key.startswith('coco/') else 1
                ax.plot(
                    [r['step'] for r in rows],
                    [scale * r[key] for r in rows],
                    marker='o',
                    label=f'{stage} {label}',
                )
    if ax.lines:
        ax.set(xlabel='iteration', ylabel='points', title='Validation metrics')
        ax.legend()
        fig.savefig(out_dir / 'metrics_vs_iter.png', dpi=100, bbox_inches='tight')
        written.append('metrics_vs_iter.png')
    plt.close(fig)
    return written


def write_report(
    work_dir: Path,
    records: dict[str, list[dict]],
    out_dir: Path,
    report_cfg: dict[str, Any],
    pretrain: dict | None = None,
) -> Path:
    """Write ``leaderboard.md``, ``leaderboard.json`` and PNG plots to ``out_dir``; return the .md path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    reproduced: dict[tuple[str, str, str], list[float]] = {}
    runs = []
    for stage, recs in records.items():
        bench = {'ade20k': 'ADE20K', 'coco': 'COCO'}[stage]
        for rec in recs:
            model = _model_name(rec['recipe']['config'])
            metrics = _run_metrics(stage, rec)
            for metric, value in metrics.items():
                reproduced.setdefault((bench, model, metric), []).append(value)
            runs.append(
                dict(
                    benchmark=bench,
                    model=model,
                    seed=rec['seed'],
                    metrics=metrics,
                    recipe=rec['recipe'],
                    checkpoint=rec['checkpoint'],
                    pretrained=rec.get('pretrained'),
                )
            )
    title = report_cfg.get('title', 'mae-dense leaderboard')
    lines = [
        f'# {title}',
        '',
        '## Published numbers and this run',
        '',
        '| benchmark | model | metric | published | source | reproduced |',
        '|---|---|---|---|---|---|',
    ]
    rows_json = []
    for bench, model, metric, value, source in REFERENCES:
        got = reproduced.get((bench, model, metric))
        lines.append(
            f'| {bench} | {model} | {metric} | {value:.2f} | {source} | {_mean_std(got) if got else "—"} |'
        )
        rows_json.append(
            dict(benchmark=bench, model=model, metric=metric, published=value, source=source, reproduced=got)
        )
    extra = [k for k in reproduced if not any(k == (b, m, me) for b, m, me, _, _ in REFERENCES)]
    if extra:
        lines += [
            '',
            '## Runs without a published counterpart (other model sizes or toy scale)',
            '',
            '| benchmark | model | metric | reproduced |',
            '|---|---|---|---|',
        ]
        lines += [f'| {b} | {m} | {me} | {_mean_std(reproduced[(b, m, me)])} |' for b, m, me in sorted(extra)]
    lines += [
        '',
        '## Recipes (effective)',
        '',
        '| run | seed | world size | batch/GPU | accum | eff. batch | lr | iters | precision | config hash |',
        '|---|---|---|---|---|---|---|---|---|---|',
    ]
    recipes = ([('pretrain', pretrain)] if pretrain and pretrain.get('recipe') else []) + [
        (f'{r["benchmark"]} {r["model"]}', r) for r in runs
    ]
    for name, r in recipes:
        rc = r['recipe']
        length = rc['iterations'] if rc.get('iterations') else f'{rc.get("epochs")} ep'
        lines.append(
            f'| {name} | {rc["seed"]} | {rc["world_size"]} | {rc["per_gpu_batch"]} | '
            f'{rc["accumulative_counts"]} | {rc["effective_batch"]} | {_num(rc["lr"])} | {length} | '
            f'{rc["precision"]} | `{rc["config_hash"]}` |'
        )
    if runs:
        rc = runs[0]['recipe']
        lines += [
            '',
            f'git commit `{rc["git_commit"]}`; versions: '
            + ', '.join(f'{k} {v}' for k, v in rc['versions'].items()),
        ]
    plots = _plots(work_dir, list(records) + (['pretrain'] if pretrain else []), out_dir)
    if plots:
        lines += ['', '## Plots', ''] + [f'![{p}]({p})' for p in plots]
    md = out_dir / 'leaderboard.md'
    md.write_text('\n'.join(lines) + '\n')
    (out_dir / 'leaderboard.json').write_text(
        json.dumps(
            dict(title=title, references=rows_json, runs=runs, pretrain=pretrain, plots=plots),
            indent=2,
            default=str,
        )
    )
    return md
