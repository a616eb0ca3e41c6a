"""Datasets on disk (plain numpy/PIL/torch; the registrations live in ``mae_dense.openmmlab``)."""

from ..errors import DataError
from .ade20k import (
    DEFAULT_DATA_ROOT,
    check_ade20k,
    check_split_dirs,
    convert_official_zip,
    generate_synthetic_ade20k,
)
from .image_folder import ImageFolder, generate_synthetic_image_folder

__all__ = [
    'ImageFolder',
    'generate_synthetic_image_folder',
    'DEFAULT_DATA_ROOT',
    'DataError',
    'check_ade20k',
    'check_split_dirs',
    'convert_official_zip',
    'generate_synthetic_ade20k',
]
