"""Datasets on disk (plain numpy/PIL; the mmseg registration lives in ``mae_dense.openmmlab.datasets``)."""

from .ade20k import (
    DEFAULT_DATA_ROOT,
    DataError,
    check_ade20k,
    check_split_dirs,
    convert_official_zip,
    generate_synthetic_ade20k,
)

__all__ = [
    'DEFAULT_DATA_ROOT',
    'DataError',
    'check_ade20k',
    'check_split_dirs',
    'convert_official_zip',
    'generate_synthetic_ade20k',
]
