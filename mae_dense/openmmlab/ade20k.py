"""mmseg's ADE20K dataset, checked on disk before it lists its files.

mmseg's ``ADE20KDataset`` lists whatever ``.jpg`` it finds and only fails later, inside a dataloader worker,
on a missing label or a bad value. ``CheckedADE20KDataset`` runs ``mae_dense.data.check_ade20k`` first and
raises its one-line ``DataError`` (missing root, unpaired or unreadable files, labels above 150).
"""

from __future__ import annotations

from pathlib import Path

from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS

from ..data.ade20k import SPLITS, check_ade20k, check_split_dirs

__all__ = ['CheckedADE20KDataset']


@DATASETS.register_module(force=True)
class CheckedADE20KDataset(ADE20KDataset):
    """``ADE20KDataset`` whose ``load_data_list`` first checks the split on disk.

    Args:
        check_values: Also decode every label PNG and check its values (about 1 ms per label).
        **kwargs: Passed to ``mmseg.datasets.ADE20KDataset``.
    """

    def __init__(self, *args, check_values: bool = True, **kwargs) -> None:
        self.check_values = check_values
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        """Check the image/label directories (see ``check_ade20k``), then list them as mmseg does."""
        if self.backend_args is None:  # remote storage (petrel, http) cannot be checked with PIL
            self._check_on_disk()
        return super().load_data_list()

    def _check_on_disk(self) -> None:
        # data_prefix is already joined with data_root here (BaseDataset._join_prefix).
        img_path, seg_map_path = self.data_prefix.get('img_path'), self.data_prefix.get('seg_map_path')
        if not img_path or not seg_map_path:  # inference on images without labels: nothing to pair
            return
        img_dir, ann_dir = Path(img_path), Path(seg_map_path)
        num_classes = len(self.metainfo['classes'])
        root = Path(self.data_root) if self.data_root else None
        split = img_dir.name
        standard = root is not None and (img_dir, ann_dir) == (
            root / 'images' / split,
            root / 'annotations' / split,
        )
        if root is not None and not root.is_dir():
            check_ade20k(root)  # raises the message that says how to make or convert the data
        elif standard and split in SPLITS:
            check_ade20k(root, split, num_classes=num_classes, check_values=self.check_values)
        else:
            check_split_dirs(img_dir, ann_dir, num_classes=num_classes, check_values=self.check_values)
