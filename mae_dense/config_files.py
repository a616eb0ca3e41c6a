"""OpenMMLab config files: the ones shipped inside the package, found by name from any directory, and
reading one with a one-line error.

The tools (``mae-dense train NAME``) and the pipeline configs (``ade20k: {config: NAME}``) both look a
shipped config up here, so a name that one accepts the other accepts too; both read a config with
:func:`config_from_file`.
"""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path
from typing import Any

from .errors import MAEDenseError, ToolError, exception_line

__all__ = [
    'CONFIG_ROOT',
    'PROBE_MODES',
    'closest_shipped',
    'config_from_file',
    'read_config',
    'resolve_config',
    'shipped_config',
    'shipped_configs',
]

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


def resolve_config(
    name: Any, error: type[MAEDenseError] = ToolError, where: str | None = None, absolute: bool = False
) -> str:
    """The path of an OpenMMLab config given as a file (as given, or resolved with ``absolute``), as
    ``configs/...`` (the configs shipped inside the package, from any directory) or as a shipped config's
    name (``mae-dense train NAME``).

    Raises:
        ``error``: one line (after ``where``, e.g. the pipeline key) naming the closest shipped configs.
    """
    if not isinstance(name, str) or not name:
        raise error(f'{where or "config"}: config must be a path, got {name!r}')
    p = Path(name).expanduser()
    if p.is_file():
        return str(p.resolve()) if absolute else name
    shipped = CONFIG_ROOT / (p.relative_to('configs') if p.parts[:1] == ('configs',) else p)
    if not p.is_absolute() and shipped.is_file():
        return str(shipped)
    named = shipped_config(name)
    if named is not None:
        return str(named)
    close = closest_shipped(name)
    hint = (
        f' (closest shipped configs: {", ".join(close)})'
        if close
        else ' (`mae-dense configs` lists the shipped ones)'
    )
    raise error(
        f'{where}: config {name}: file not found{hint}' if where else f'{name}: config file not found{hint}'
    )


def config_from_file(path: str, error: type[MAEDenseError] = ToolError, import_custom_modules: bool = True):
    """mmengine's ``Config.fromfile(path)``; a config that cannot be read (a syntax error, a missing base,
    one that raises, even with an empty message) raises ``error`` with one line naming the file."""
    from mmengine.config import Config

    try:
        with warnings.catch_warnings():  # mmengine's import of pkg_resources warns on every config read
            warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
            return Config.fromfile(path, import_custom_modules=import_custom_modules)
    except Exception as exc:  # syntax errors, missing bases: say which file
        raise error(f'{path}: cannot read the config ({exception_line(exc)})') from None


def read_config(path: str, cfg_options: dict[str, Any] | None = None, error: type[MAEDenseError] = ToolError):
    """:func:`config_from_file` with ``cfg_options`` merged."""
    cfg = config_from_file(path, error)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg
