"""What the train and test tools share: config loading, launcher set-up on CPU, one-line errors."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import USER_ERRORS, ToolError

# tools/dist_launch.sh sets this file; a failing process writes its one-line error there, and the launcher
# prints it again after torchrun's own report, so that it is the last line on screen.
ERROR_FILE_ENV = 'MAE_DENSE_ERROR_FILE'


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
    from ..config_files import config_from_file, resolve_config

    path = resolve_config(path)  # a file, or the name of a shipped config
    cfg = config_from_file(path)  # ToolError: one line naming the file
    if args.cfg_options:
        if int(os.environ.get('RANK', '0')) == 0:
            for line in unknown_option_keys(cfg, args.cfg_options, path):
                print(f'warning: {line}', file=sys.stderr)
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or str(Path('work_dirs') / Path(path).stem)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    setup_cpu_distributed(cfg)
    return cfg


def unknown_option_keys(cfg: Any, options: Mapping[str, object], path: str) -> list[str]:
    """One line per ``--cfg-options`` key that names no key of the config, with the closest existing one.

    mmengine merges such a key silently as a new one, so a typo (``num_worker``) changes nothing.
    """
    import difflib
    import inspect

    from mmengine.runner import Runner

    # Top-level names the Runner reads although a config may not state them (experiment_name, ...).
    runner_keys = set(inspect.signature(Runner.__init__).parameters) - {'self'}
    lines = []
    for key in options:
        node, parts = cfg, key.split('.')
        if len(parts) == 1 and key in runner_keys:
            continue
        for i, part in enumerate(parts):
            mapping = hasattr(node, 'keys')  # a dict, a ConfigDict or mmengine's Config itself
            if mapping and part in node:
                node = node[part]
            elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                siblings = [str(k) for k in node.keys()] if mapping else []
                if i == len(parts) - 1 and mapping:
                    accepted = constructor_keys(node.get('type'), cfg.get('default_scope'))
                    if part in accepted:  # an argument the config leaves at its default
                        break
                    siblings += sorted(accepted)
                close = difflib.get_close_matches(part, siblings, n=1, cutoff=0.6)
                where = '.'.join(parts[:i]) or 'the top level'
                hint = (
                    f'closest: {".".join([*parts[:i], close[0], *parts[i + 1 :]])}'
                    if close
                    else f'nothing close under {where}'
                )
                lines.append(
                    f'--cfg-options {key}: {path} has no such key ({hint}); it is added as a new key'
                )
                break
    return lines


def constructor_keys(kind: Any, scope: str | None) -> set[str]:
    """The keyword arguments that the class a ``type=kind`` dict builds accepts (through ``**kwargs`` too).

    Looked up in the registries of the config's ``default_scope`` (``mmseg.registry``, ...; each also
    searches mmengine's), then in mmengine's; empty when ``kind`` names nothing registered.
    """
    import importlib
    import inspect

    from mmengine import registry as engine
    from mmengine.registry import Registry

    cls = kind if isinstance(kind, type) else None
    if isinstance(kind, str):
        scoped = []
        if scope and scope != 'mmengine':
            try:
                scoped = [importlib.import_module(f'{scope}.registry')]
            except ImportError:
                pass
        for module in (*scoped, engine):
            found = (r.get(kind) for r in vars(module).values() if isinstance(r, Registry))
            cls = next((c for c in found if c is not None), None)
            if cls is not None:
                break
    keys: set[str] = set()
    for klass in inspect.getmro(cls) if isinstance(cls, type) else ():
        init = vars(klass).get('__init__')
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        keys |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if all(p.kind != p.VAR_KEYWORD for p in params):
            break  # the rest of the chain gets only what this one passes on
    return keys - {'self'}


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
        line = f'error: {exc}'
        print(line, file=sys.stderr)
        error_file = os.environ.get(ERROR_FILE_ENV)
        if error_file:
            Path(error_file).write_text(line + '\n')
        return 1


def add_mae_arch_args(parser: argparse.ArgumentParser, default: str = 'large') -> None:
    """``--arch {base,large,huge}`` or ``--config PRETRAIN_CONFIG`` (a model of any size: its ``model``)."""
    from ..models.archs import ARCHS

    group = parser.add_mutually_exclusive_group()
    group.add_argument('--arch', choices=tuple(ARCHS), help=f'standard MAE size (default: {default})')
    group.add_argument('--config', help='a pretraining config: the MAE of its `model` (any size)')
    parser.set_defaults(default_arch=default)


def mae_kwargs(args: argparse.Namespace) -> tuple[dict, str]:
    """:class:`MaskedAutoencoder` arguments chosen by :func:`add_mae_arch_args`, and how to name them."""
    from ..models.archs import mae_config

    if not getattr(args, 'config', None):
        arch = args.arch or args.default_arch
        return mae_config(arch), f'--arch {arch}'
    from ..config_files import config_from_file

    if not Path(args.config).is_file():
        raise ToolError(f'{args.config}: config file not found')
    model = config_from_file(args.config).get('model')
    if not model or model.get('type') != 'MAEPretrainer':
        raise ToolError(f"{args.config}: expected a pretraining config (model.type='MAEPretrainer')")
    kwargs = {k: v for k, v in model.to_dict().items() if k not in ('type', 'data_preprocessor')}
    arch = kwargs.pop('arch', 'base')
    return mae_config(arch, **kwargs), f'--config {args.config}'
