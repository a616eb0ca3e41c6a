"""The configs that ship inside the package: ``mae-dense configs`` lists them, tools take them by name.

A shipped config can be named without its path (``mae-dense train upernet_mae-base_fp16_8x2_512x512_160k_ade20k``)
from any directory, with or without a checkout; a path that exists always wins.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

from ..config_files import CONFIG_ROOT, resolve_config, shipped_configs
from ..errors import ToolError

# What each folder's configs train.
TASKS = {
    'pretrain': 'MAE pretraining',
    'ade20k': 'ADE20K semantic segmentation',
    'coco': 'COCO detection + instance segmentation',
    'nyu': 'NYU Depth v2 frozen-backbone depth probe (mae-dense probe)',
    'demo': 'demo (synthetic data)',
    'pipelines': 'pipeline (mae-dense pipeline)',
}


def published(path: Path) -> dict | None:
    """The ``published = {...}`` literal of this very file (not inherited), or None."""
    if path.suffix != '.py':
        return None
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == 'published' for t in node.targets):
            return ast.literal_eval(node.value)
    return None


def describe(path: Path) -> tuple[str, str, str]:
    """(name, task, published number) of a shipped config."""
    rel = path.relative_to(CONFIG_ROOT)
    task = TASKS.get(rel.parts[0], rel.parts[0])
    if rel.parts[0] == 'pretrain':
        task += ' on synthetic data' if 'synthetic' in path.stem else ' on ImageNet-1k'
    elif 'linear-probe' in path.stem:
        task = 'ADE20K frozen-backbone linear probe (mae-dense probe)' if rel.parts[0] == 'ade20k' else task
    pub = published(path) or {}
    numbers = ', '.join(f'{k} {v}' for k, v in pub.items() if k != 'source')
    source = f' ({pub["source"]})' if 'source' in pub else ''
    return path.stem, task, (numbers + source) if numbers else '—'


def main(argv: list[str] | None = None) -> int:
    """``mae-dense configs [--path NAME]``: the shipped configs with their task and published number."""
    parser = argparse.ArgumentParser(prog='mae-dense configs', description=main.__doc__)
    parser.add_argument('--path', metavar='NAME', help='print the file of one shipped config (to inherit it)')
    args = parser.parse_args(argv)
    if args.path:
        try:
            print(Path(resolve_config(args.path)).resolve())
        except ToolError as exc:
            print(f'error: {exc}', file=sys.stderr)
            return 1
        return 0
    rows = [describe(p) for p in shipped_configs()]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    print(f'{"config":<{widths[0]}}  {"task":<{widths[1]}}  published')
    for name, task, pub in rows:
        print(f'{name:<{widths[0]}}  {task:<{widths[1]}}  {pub}')
    example = 'upernet_mae-base_fp16_8x2_512x512_160k_ade20k'
    print(
        f'\n{len(rows)} configs in {CONFIG_ROOT}; any of them runs by name, e.g. `mae-dense train {example}`'
    )
    return 0
