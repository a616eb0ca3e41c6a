"""Datasets on disk (plain numpy/PIL/torch; the registrations live in ``mae_dense.openmmlab``).

Each format's module holds its checker (:mod:`.ade20k`, :mod:`.coco`, :mod:`.image_folder`, :mod:`.nyu`);
:mod:`.synthetic` writes small data sets in those formats.
"""

from ..errors import DataError
from .ade20k import DEFAULT_DATA_ROOT, check_ade20k, check_split_dirs, convert_official_zip
from .image_folder import ImageFolder

_SYNTHETIC = (
    'generate_synthetic_ade20k',
    'generate_synthetic_coco',
    'generate_synthetic_image_folder',
    'generate_synthetic_nyu',
)

__all__ = [
    'DEFAULT_DATA_ROOT',
    'DataError',
    'ImageFolder',
    'check_ade20k',
    'check_split_dirs',
    'convert_official_zip',
    'generate_synthetic_ade20k',
    'generate_synthetic_coco',
    'generate_synthetic_image_folder',
    'generate_synthetic_nyu',
]


def __getattr__(name: str):
    # The generators load on first use: their pycocotools stays out of runs that need no synthetic data.
    if name in _SYNTHETIC:
        from . import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
