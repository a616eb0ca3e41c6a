"""``python tools/test.py CONFIG CKPT`` / ``sh tools/dist_test.sh CONFIG CKPT GPUS --eval mIoU``.

Accepts the legacy ``--eval`` (mIoU/mDice/mFscore for segmentation, bbox/segm/proposal for detection),
``--aug-test``/``--tta`` (the ms+flip protocol of the config), ``--out DIR`` (one label PNG per image, as
mmseg 1.x's ``IoUMetric(output_dir=...)`` writes them), ``--show-dir`` (overlays), a progress bar, and
prints the metrics as a table and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .common import ToolError, add_common_args, load_config, run_tool

SEG_METRICS = ('mIoU', 'mDice', 'mFscore')
DET_METRICS = ('bbox', 'segm', 'proposal', 'proposal_fast')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (evaluate) a checkpoint.')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file (any layout the project loads)')
    parser.add_argument(
        '--eval', nargs='+', metavar='METRIC', help=f'metrics: {SEG_METRICS} or {DET_METRICS}'
    )
    parser.add_argument(
        '--aug-test',
        '--tta',
        dest='tta',
        action='store_true',
        help="multi-scale + flip test (the config's ms_flip_test_cfg)",
    )
    parser.add_argument(
        '--out',
        help='segmentation: directory for one label PNG per image; detection: '
        'prefix of the COCO-format result JSON files',
    )
    parser.add_argument('--show', action='store_true', help='show results in a window')
    parser.add_argument('--show-dir', help='directory for overlay images')
    parser.add_argument('--wait-time', type=float, default=2, help='seconds between shown images')
    add_common_args(parser)
    return parser.parse_args(argv)


def _evaluators(cfg) -> list:
    ev = cfg.test_evaluator
    return list(ev) if isinstance(ev, (list, tuple)) else [ev]


# mmdet's, and ours (mae_dense.openmmlab.detection: the same arguments, no detection at all scores 0.0)
COCO_METRICS = ('CocoMetric', 'CocoMetricScoringNoDetections')
# evaluator type -> (what the config is, the legacy --eval names it takes, the evaluator key they set)
EVAL_NAMES = {
    'IoUMetric': ('segmentation', SEG_METRICS, 'iou_metrics'),
    **dict.fromkeys(COCO_METRICS, ('detection', DET_METRICS, 'metric')),
}


def apply_eval(cfg, metrics: list[str], config_path: str = 'the config') -> None:
    """Legacy ``--eval`` names onto the config's evaluators; a metric of the other task is one line."""
    for ev in _evaluators(cfg):
        if ev['type'] not in EVAL_NAMES:
            raise ToolError(f"--eval: the config's evaluator {ev['type']} takes no legacy metric names")
        task, names, key = EVAL_NAMES[ev['type']]
        bad = [m for m in metrics if m not in names]
        if bad:
            raise ToolError(
                f'--eval {" ".join(bad)}: not a {"COCO" if task == "detection" else task} metric, and '
                f'{config_path} is a {task} config ({ev["type"]}); expected {", ".join(names)}'
            )
        ev[key] = list(metrics)


def apply_tta(cfg, config_path: str) -> None:
    if 'ms_flip_test_cfg' not in cfg or 'ms_flip_test_pipeline' not in cfg:
        raise ToolError(
            f'{config_path}: --aug-test needs ms_flip_test_cfg and ms_flip_test_pipeline in the config'
        )
    cfg.model.test_cfg = cfg.ms_flip_test_cfg
    cfg.test_dataloader.dataset.pipeline = cfg.ms_flip_test_pipeline


def apply_out(cfg, out: str) -> None:
    for ev in _evaluators(cfg):
        if ev['type'] == 'IoUMetric':
            ev['output_dir'] = out
            ev['keep_results'] = True
        elif ev['type'] in COCO_METRICS:
            ev['outfile_prefix'] = out


def apply_show(cfg, args: argparse.Namespace) -> None:
    hooks = cfg.default_hooks
    if 'visualization' not in hooks:
        raise ToolError('--show/--show-dir: the config has no default_hooks.visualization')
    hooks.visualization['draw'] = True
    hooks.visualization['interval'] = 1  # every image (mmseg's tools draw every 50th)
    if args.show:
        hooks.visualization['show'] = True
        hooks.visualization['wait_time'] = args.wait_time
    if args.show_dir:
        cfg.visualizer['save_dir'] = args.show_dir


def plain(metrics: dict) -> dict:
    """numpy scalars -> Python numbers (JSON)."""
    return {k: (v.item() if hasattr(v, 'item') else v) for k, v in metrics.items()}


def format_table(metrics: dict) -> str:
    width = max([6, *(len(k) for k in metrics)])
    lines = [f'{"metric":<{width}}  value', f'{"-" * width}  -----']
    for k, v in metrics.items():
        lines.append(f'{k:<{width}}  {v:.4f}' if isinstance(v, float) else f'{k:<{width}}  {v}')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def _run() -> int:
        from mmengine.dist import is_main_process

        from ..checkpoint import load_model
        from ..openmmlab.engine.runner import MAEDenseRunner, unwrap_model

        if not Path(args.checkpoint).is_file() and not args.checkpoint.startswith(('http://', 'https://')):
            raise ToolError(f'{args.checkpoint}: checkpoint file not found')
        cfg = load_config(args.config, args)
        # loaded below through the project's loader (any backbone layout, strictly); never a training resume
        cfg.load_from, cfg.resume = None, False
        # Testing never trains: without these the visualization hook's runner.iter builds the train loop
        # (and its dataset) just to read an iteration count.
        cfg.train_dataloader = cfg.train_cfg = cfg.optim_wrapper = cfg.param_scheduler = None
        if args.eval:
            apply_eval(cfg, args.eval, args.config)
        if args.tta:
            apply_tta(cfg, args.config)
        if args.out:
            apply_out(cfg, args.out)
        if args.show or args.show_dir:
            apply_show(cfg, args)
        cfg.custom_hooks = [*cfg.get('custom_hooks', []), dict(type='ProgressBarHook')]
        runner = MAEDenseRunner.from_cfg(cfg)  # mmengine's, loaders fitted to the machine
        model = unwrap_model(runner.model)
        load_model(model, args.checkpoint)
        metrics = plain(runner.test())
        if is_main_process():
            print(format_table(metrics), flush=True)
            out = Path(runner.log_dir) / f'metrics_{time.strftime("%Y%m%d_%H%M%S")}.json'
            payload = dict(config=args.config, checkpoint=args.checkpoint, tta=args.tta, metrics=metrics)
            out.write_text(json.dumps(payload, indent=2))
            print(f'metrics written to {out}', flush=True)
        return 0

    return run_tool(_run)


if __name__ == '__main__':  # python -m mae_dense.cli.test (how the pipeline launches it)
    raise SystemExit(main())
