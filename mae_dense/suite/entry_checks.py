"""One-line checks of a pipeline config's values: unknown keys (with the closest valid one), mappings,
positive integers, task configs resolved to files."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from .. import config_files
from ..errors import PipelineError

__all__ = ['check_keys', 'mapping_of', 'positive_int', 'resolve_config']


def check_keys(where: str, mapping: Mapping, allowed: Iterable[str]) -> None:
    """Refuse a key outside ``allowed`` with one line naming the closest valid key."""
    allowed = list(allowed)
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ''
            raise PipelineError(f"{where}: unknown key '{key}'{hint} (valid keys: {', '.join(allowed)})")


def resolve_config(path: Any, where: str) -> str:
    """An OpenMMLab config of a pipeline entry as an absolute path (:func:`config_files.resolve_config`)."""
    return config_files.resolve_config(path, PipelineError, where, absolute=True)


def mapping_of(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PipelineError(f'{where}: expected a mapping, got {type(value).__name__} {value!r}')
    return dict(value)


def positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PipelineError(f'{where}: expected a positive integer, got {value!r}')
    return value
