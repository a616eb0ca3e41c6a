"""mmdet's COCO dataset, checked on disk before it lists its images.

mmdet's ``CocoDataset`` trusts the annotation file: a missing image only fails inside a dataloader worker,
and an undeclared category is silently dropped. ``CheckedCocoDataset`` runs ``mae_dense.data.coco``'s
checker first and raises its one-line ``DataError`` unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from mmengine.fileio import get_local_path

from ..data.coco import (
    SPLITS,
    ann_file_path,
    check_classes,
    check_coco,
    check_coco_files,
    coco_classes,
    image_dir_path,
)

__all__ = ['CheckedCocoDataset', 'coco_split']

_ANN_FILE_PATTERN = re.compile(r'instances_([a-z]+)2017\.json$')


def coco_split(ann_file: str | Path) -> str | None:
    """The split named by a COCO 2017 instances file (``instances_val2017.json`` -> ``'val'``), else None."""
    match = _ANN_FILE_PATTERN.search(Path(ann_file).name)
    return match.group(1) if match else None


@DATASETS.register_module(force=True)
class CheckedCocoDataset(CocoDataset):
    """``CocoDataset`` whose ``load_data_list`` first checks the annotation file and the images on disk.

    Args:
        check_sizes: Also open every image and compare its size with the declared width/height.
        classes_from_ann_file: Take ``metainfo['classes']`` from the annotation file's categories (in
            their file order, which is the order mmdet gives labels); do not pass ``metainfo['classes']``
            as well.
        **kwargs: Passed to ``mmdet.datasets.CocoDataset``.
    """

    def __init__(
        self, *args: Any, check_sizes: bool = False, classes_from_ann_file: bool = False, **kwargs: Any
    ) -> None:
        if classes_from_ann_file and 'classes' in (kwargs.get('metainfo') or {}):
            raise ValueError('pass either metainfo=dict(classes=...) or classes_from_ann_file=True, not both')
        self.check_sizes = check_sizes
        self.classes_from_ann_file = classes_from_ann_file
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        """Check the split (see ``mae_dense.data.coco.check_coco``), then list it as mmdet does."""
        # The class names are checked before any training or evaluation, not in results2json after the
        # whole test: with the on-disk check, from the file it parses anyway.
        classes = None if self.classes_from_ann_file else self.metainfo['classes']
        if self.backend_args is None:  # remote storage (petrel, http) cannot be checked with pathlib
            self._check_on_disk(classes)
        if self.classes_from_ann_file or self.backend_args is not None:
            with get_local_path(self.ann_file, backend_args=self.backend_args) as local_path:
                if self.classes_from_ann_file:
                    self._metainfo['classes'] = coco_classes(local_path)
                else:
                    check_classes(classes, local_path)
        return super().load_data_list()

    def _check_on_disk(self, classes: Sequence[str] | None) -> None:
        # ann_file and data_prefix are already joined with data_root here (BaseDataset._join_prefix).
        ann_file = Path(self.ann_file)
        img_prefix = self.data_prefix.get('img')
        img_dir = Path(img_prefix) if img_prefix else None
        root = Path(self.data_root) if self.data_root else None
        split = coco_split(ann_file)
        if root is not None and not root.is_dir():
            check_coco(root, split if split in SPLITS else 'train')  # raises: says how to get the data
        standard = (
            root is not None
            and split in SPLITS
            and ann_file == ann_file_path(root, split)
            and img_dir == image_dir_path(root, split)
        )
        if standard:
            check_coco(root, split, check_sizes=self.check_sizes, classes=classes)
        else:
            check_coco_files(ann_file, img_dir, check_sizes=self.check_sizes, classes=classes)
