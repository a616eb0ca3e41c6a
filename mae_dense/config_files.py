"""OpenMMLab config files: the ones shipped inside the package, found by name from any directory, and
reading one with a one-line error.

The tools (``mae-dense train NAME``) and the pipeline configs (``ade20k: {config: NAME}``) both look a
shipped config up here, so a name that one accepts the other accepts too; both read a config with
:func:`config_from_file`.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from .errors import MAEDenseError, ToolError, exception_line

__all__ = ['CONFIG_ROOT', 'closest_shipped', 'config_from_file', 'shipped_config', 'shipped_configs']

CONFIG_ROOT = Path(__file__).resolve().parent / 'configs'
# How a probe config runs: its ``fast_mode`` section merged (cached features, lr sweep) or the config as it
# is (the probe command's --mode, and probe.mode in a pipeline)
PROBE_MODES = ('fast', 'augmented')


def shipped_configs() -> list[Path]:
    """Every runnable shipped config (base files, whose names start with ``_``, excluded), sorted."""
    files = [*CONFIG_ROOT.rglob('*.py'), *CONFIG_ROOT.rglob('*.yaml')]
    return sorted(p for p in files if not p.name.startswith('_') and '__pycache__' not in p.parts)


def _stem(name: str) -> str:
    return Path(name).name.removesuffix('.py').removesuffix('.yaml')


def shipped_config(name: str) -> Path | None:
    """The shipped config called ``name`` (its file name, with or without ``.py``/``.yaml``; folders before
    it are ignored), or None when no shipped config, or more than one, has that name."""
    stem = _stem(name)
    found = [p for p in shipped_configs() if p.stem == stem]
    return found[0] if len(found) == 1 else None


def closest_shipped(name: str, n: int = 3) -> list[str]:
    """The names of the shipped configs closest to ``name`` (for a "did you mean" hint)."""
    return difflib.get_close_matches(_stem(name), [p.stem for p in shipped_configs()], n=n, cutoff=0.6)


def config_from_file(path: str, error: type[MAEDenseError] = ToolError):
    """mmengine's ``Config.fromfile(path)``; a config that cannot be read (a syntax error, a missing base,
    one that raises, even with an empty message) raises ``error`` with one line naming the file."""
    from mmengine.config import Config

    try:
        return Config.fromfile(path)
    except Exception as exc:  # syntax errors, missing bases: say which file
        raise error(f'{path}: cannot read the config ({exception_line(exc)})') from None
