"""The probe's data: fixed augmented crops, their features cached once on disk, and the dataset over the
cache (registered on import)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from mmengine.dist import barrier, get_dist_info
from mmengine.logging import print_log
from mmseg.registry import DATASETS
from torch import nn

from ...data.feature_cache import FeatureCache, FeatureCacheWriter
from ...errors import ConfigError
from ..engine.random_state import rng_preserved
from .model import LinearProbeEncoderDecoder


@contextlib.contextmanager
def _seeded_augmentation(seed: int, index: int) -> Iterator[None]:
    """numpy's and Python's global generators (the ones mmcv/mmseg transforms draw from) seeded for one
    crop, their previous states restored after."""
    np_state, py_state = np.random.get_state(), random.getstate()
    crop_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
    np.random.seed(crop_seed)
    random.seed(crop_seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


@DATASETS.register_module(force=True)
class ProbeFixedCrops(torch.utils.data.Dataset):
    """A fixed set of augmented crops: crop ``i`` is always the same draw of the pipeline's randomness.

    Crop ``i`` is view ``i // len(dataset)`` of image ``i % len(dataset)``; its transforms draw from
    generators seeded by ``(seed, i)``, whichever process or order loads it. Each item carries its index
    as the ``crop_index`` metainfo.

    Args:
        dataset: the image dataset (its pipeline makes the crops).
        views: crops per image.
        seed: seed of the crops.
        num_crops: use this many crops, evenly spaced over all of them (default: all).
    """

    def __init__(self, dataset: dict, views: int = 1, seed: int = 0, num_crops: int | None = None) -> None:
        self.dataset = DATASETS.build(dataset)
        total = len(self.dataset) * views
        if views < 1 or (num_crops is not None and not 1 <= num_crops <= total):
            raise ConfigError(
                f'ProbeFixedCrops: views={views}, num_crops={num_crops}: expected views >= 1 and '
                f'1 <= num_crops <= {total} ({len(self.dataset)} images x {views} views)'
            )
        self.seed = seed
        count = total if num_crops is None else num_crops
        self.indices = np.linspace(0, total - 1, count).round().astype(np.int64)

    @property
    def metainfo(self) -> dict:
        return self.dataset.metainfo

    def full_init(self) -> None:
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        crop = int(self.indices[i])
        with _seeded_augmentation(self.seed, crop):
            item = self.dataset[crop % len(self.dataset)]
        item['data_samples'].set_metainfo(dict(crop_index=i))
        return item


@DATASETS.register_module(force=True)
class ProbeFeatureDataset(torch.utils.data.Dataset):
    """The cached features and labels of :class:`ProbeFixedCrops` (fast mode).

    Args:
        crops: the :class:`ProbeFixedCrops` config the cache is built from (read by the tool that builds it).
        dtype: feature dtype on disk (``'float16'``).
        cache_dir: the cache itself; ``mae-dense probe --mode fast`` sets it after building the cache.
    """

    def __init__(self, crops: dict, dtype: str = 'float16', cache_dir: str | None = None) -> None:
        if cache_dir is None:
            raise ConfigError(
                'ProbeFeatureDataset.cache_dir is unset: the fast mode runs through `mae-dense probe CONFIG '
                '--mode fast`, which builds the feature cache and sets it'
            )
        self.cache = FeatureCache(cache_dir)
        self.metainfo = self.cache.meta.get('metainfo', {})

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> dict:
        features, labels = self.cache[i]
        return dict(features=torch.from_numpy(features), labels=torch.from_numpy(labels))


def build_feature_cache(
    model: LinearProbeEncoderDecoder | nn.Module,
    loader_cfg: dict,
    cache_dir: str | Path,
    dtype: str,
    meta: dict,
    seed: int | None = None,
) -> int:
    """One pass of the frozen backbone over the fixed crops, each crop's features into its cache row.

    The model is a :class:`LinearProbeEncoderDecoder` or any segmentor with the same ``backbone_features``,
    ``cache_targets`` and ``cache_label_dtype`` (the depth probe's). The crops go through the model's own data preprocessor in training mode (the same normalisation and
    padding as an on-the-fly training step) and :meth:`LinearProbeEncoderDecoder.backbone_features`. With
    several processes each extracts its share of the crops (the loader's sampler splits them). Global
    random states are left as they were, so a run that builds the cache trains exactly as one that finds it.

    Returns:
        The number of crops.
    """
    from mmengine.runner import Runner

    rank, _ = get_dist_info()
    size = model.data_preprocessor.size
    if not size:
        raise ConfigError('model.data_preprocessor.size is unset: the fast mode caches fixed-size crops')
    patch = model.backbone.patch_size
    feature_shape = (model.backbone.feature_channels, size[0] // patch, size[1] // patch)
    with rng_preserved():
        loader = Runner.build_dataloader(loader_cfg, seed=seed)
        num = len(loader.dataset)
        label_dtype = model.cache_label_dtype
        shape = dict(
            num=num,
            feature_shape=feature_shape,
            label_shape=tuple(size),
            dtype=dtype,
            label_dtype=label_dtype,
        )
        writer = FeatureCacheWriter(cache_dir, create=True, **shape) if rank == 0 else None
        barrier()
        writer = writer or FeatureCacheWriter(cache_dir, create=False, **shape)
        every = max(1, len(loader) // 10)
        for step, batch in enumerate(loader):
            data = model.data_preprocessor(batch, training=True)
            features = model.backbone_features(data['inputs'])
            labels = model.cache_targets(data['data_samples'])  # (B, H, W)
            writer.write(
                [s.metainfo['crop_index'] for s in data['data_samples']],
                features.to(getattr(torch, dtype)).cpu().numpy(),
                labels.to(getattr(torch, label_dtype)).cpu().numpy(),
            )
            if (step + 1) % every == 0 or step + 1 == len(loader):
                print_log(f'feature cache: {step + 1}/{len(loader)} batches', logger='current')
        writer.flush()
        barrier()
        if rank == 0:
            writer.commit(dict(meta, metainfo=loader.dataset.metainfo))
        barrier()
    return num
