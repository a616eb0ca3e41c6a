"""``python tools/train.py CONFIG`` / ``sh tools/dist_train.sh CONFIG GPUS``: mmengine's Runner, as mmseg/mmdet."""

from __future__ import annotations

import argparse

from .common import add_common_args, load_config, run_tool


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model (pretraining, ADE20K or COCO config).')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        default=None,
        help='resume from the latest checkpoint in the work dir, or from the given file',
    )
    parser.add_argument('--amp', action='store_true', help='force AmpOptimWrapper (mixed precision)')
    add_common_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def _run() -> int:
        from ..openmmlab.engine.runner import MAEDenseRunner

        cfg = load_config(args.config, args)
        if args.amp and cfg.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper':
            cfg.optim_wrapper.type = 'AmpOptimWrapper'  # AMP wrappers (ours included) are left as they are
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        if args.resume == 'auto':
            cfg.resume, cfg.load_from = True, None
        elif args.resume:
            cfg.resume, cfg.load_from = True, args.resume
        runner = MAEDenseRunner.from_cfg(cfg)  # mmengine's, loaders fitted to the machine
        runner.train()
        return 0

    return run_tool(_run)


if __name__ == '__main__':  # python -m mae_dense.cli.train (how the pipeline launches it)
    raise SystemExit(main())
