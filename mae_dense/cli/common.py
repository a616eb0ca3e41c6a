"""What the train and test tools share: config loading, launcher set-up on CPU, one-line errors."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import USER_ERRORS, ToolError

ROOT = Path(__file__).resolve().parents[2]


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--work-dir', help='where logs and checkpoints go (default: ./work_dirs/<config name>)'
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=_DictAction,
        default={},
        help='override config keys: key=value (dotted keys, lists as [a,b])',
    )
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


class _DictAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        from mmengine.config import DictAction

        DictAction(self.option_strings, self.dest)(parser, namespace, values, option_string)


def load_config(path: str, args: argparse.Namespace):
    """Config with --cfg-options, --work-dir and the launcher applied; one-line errors."""
    from mmengine.config import Config

    if not Path(path).is_file():
        raise ToolError(f'{path}: config file not found')
    try:
        cfg = Config.fromfile(path)
    except Exception as exc:  # syntax errors, missing bases: say which file
        raise ToolError(
            f'{path}: cannot read the config ({type(exc).__name__}: {str(exc).splitlines()[0]})'
        ) from None
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or str(Path('work_dirs') / Path(path).stem)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    setup_cpu_distributed(cfg)
    return cfg


def setup_cpu_distributed(cfg) -> None:
    """torchrun on a machine without CUDA: gloo instead of NCCL and a DDP wrapper without device_ids."""
    import torch

    if cfg.launcher == 'none' or torch.cuda.is_available():
        return
    env_cfg = cfg.setdefault('env_cfg', {})
    env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    cfg.model_wrapper_cfg = dict(
        type='MMDistributedDataParallelCPU',
        **{k: v for k, v in (cfg.get('model_wrapper_cfg') or {}).items() if k != 'type'},
    )
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            backend='gloo'
        )  # mmengine's init_dist would call cuda.set_device


def run_tool(main: Callable[[], int]) -> int:
    """Run a tool's main; the project's own errors become one line on stderr and exit code 1."""
    try:
        return main()
    except USER_ERRORS as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
