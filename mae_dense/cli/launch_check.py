"""What ``tools/dist_train.sh`` and ``tools/dist_test.sh`` check before torchrun starts any process.

A wrong config, checkpoint or work dir then costs one line and no process group; and when a worker does
fail later, the launcher prints the worker's one-line error again after torchrun's own report
(:data:`mae_dense.cli.common.ERROR_FILE_ENV`), so the line the user needs is the last one on screen.

Usage (from the scripts): ``python -m mae_dense.cli.launch_check {train,test} ARGS...``.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from ..checkpoint.safe_load import is_url
from ..errors import ToolError
from .common import run_tool


def _check_work_dir(work_dir: str | None) -> None:
    if not work_dir:
        return
    path = Path(work_dir)
    if path.exists() and not path.is_dir():
        raise ToolError(f'--work-dir {work_dir}: exists and is not a directory')
    parent = next((p for p in (path, *path.parents) if p.exists()), Path('.'))
    if not os.access(parent, os.W_OK):
        raise ToolError(f'--work-dir {work_dir}: cannot create it ({parent} is not writable)')


def check(tool: str, argv: list[str]) -> None:
    """Parse ``argv`` as ``tools/{tool}.py`` does and check the files it names; raise one ToolError."""
    from ..config_files import config_from_file, resolve_config

    if tool == 'train':
        from .train import parse_args

        args = parse_args(argv)
        if args.resume not in (None, 'auto') and not Path(args.resume).is_file():
            raise ToolError(f'--resume {args.resume}: checkpoint file not found')
    elif tool == 'test':
        from .test import parse_args

        args = parse_args(argv)
        if not is_url(args.checkpoint) and not Path(args.checkpoint).is_file():
            raise ToolError(f'{args.checkpoint}: checkpoint file not found')
    else:
        raise ToolError(f'launch_check: unknown tool {tool!r}; expected train or test')
    config = resolve_config(args.config)
    _check_work_dir(args.work_dir)
    if tool == 'test' and args.eval:  # e.g. --eval mIoU on a detection config
        from .test import apply_eval

        apply_eval(config_from_file(config, import_custom_modules=False), args.eval, args.config)


def main(argv: list[str] | None = None) -> int:
    warnings.simplefilter('ignore')  # a check prints its one line or nothing (mmengine warns on import)
    argv = sys.argv[1:] if argv is None else argv
    tool = argv[0].removesuffix('.py') if argv else ''

    def _check() -> int:
        check(tool, argv[1:])
        return 0

    return run_tool(_check)


if __name__ == '__main__':
    sys.exit(main())
