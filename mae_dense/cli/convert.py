"""Checkpoint converters: ``python tools/model_converters/{beit2mmseg,mmcls2timm,convert}.py SRC DST``."""

from __future__ import annotations

import argparse
import sys

from ..checkpoint import CheckpointError, convert_file
from ..checkpoint.convert import TARGETS


def main(argv: list[str] | None = None, to: str | None = None, prog: str | None = None) -> int:
    """Convert SRC (path or https URL, any recognised layout) to DST in the ``to`` layout."""
    what = f'to the {to} layout' if to else 'to another layout'
    parser = argparse.ArgumentParser(
        prog=prog, description=f'Convert a ViT checkpoint (any known layout) {what}.'
    )
    parser.add_argument('src', help='source checkpoint: path or https URL (cached by torch.hub)')
    parser.add_argument('dst', help='destination file (.pth or .safetensors)')
    if to is None:
        parser.add_argument(
            '--to', choices=TARGETS, default='project', help='target layout (default: project)'
        )
    args = parser.parse_args(argv)
    try:
        convert_file(args.src, args.dst, to or args.to)
    except CheckpointError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    return 0
