"""The user-facing error types, in one place.

Each carries a one-line message that names the file, key or value and what was expected; the tools print
it as ``error: <message>`` and exit with status 1 (:func:`mae_dense.cli.common.run_tool`), never with a
traceback. Every layer raises these (the data checks, the checkpoint loader, the OpenMMLab adapter, the
tools), so none of them needs to import another layer to raise or catch a user error.
"""

from __future__ import annotations

__all__ = [
    'CheckpointError',
    'ConfigError',
    'DataError',
    'MAEDenseError',
    'NonFiniteLossError',
    'PipelineError',
    'ToolError',
    'USER_ERRORS',
    'exception_line',
]


class MAEDenseError(Exception):
    """Base of the project's user-facing errors: the message is the whole story, in one line."""


class ToolError(MAEDenseError, RuntimeError):
    """A tool's arguments or environment are wrong (a missing file, an option the config cannot take)."""


class ConfigError(ToolError):
    """A config names a key or value that does not exist or does not fit."""


class PipelineError(ToolError):
    """A pipeline config is wrong, or one of its stages failed."""


class NonFiniteLossError(ToolError):
    """Training produced too many non-finite losses in a row."""


class CheckpointError(MAEDenseError, RuntimeError):
    """A checkpoint cannot be read, is refused by the loading policy, or does not fit the model."""


class DataError(MAEDenseError, ValueError):
    """A data set problem: a missing or unreadable file, a malformed annotation, a value out of range."""


# What the tools catch and print as one line.
USER_ERRORS: tuple[type[BaseException], ...] = (MAEDenseError,)


def exception_line(exc: BaseException) -> str:
    """Any exception in one line: ``Type: first line of its message``, ``Type`` alone when it has none."""
    lines = str(exc).splitlines()
    return f'{type(exc).__name__}: {lines[0]}' if lines and lines[0] else type(exc).__name__
