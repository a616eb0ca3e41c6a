"""The one exception type of the data layer."""

from __future__ import annotations

__all__ = ['DataError']


class DataError(ValueError):
    """A data set problem; the message is one line naming the file, key or value."""
