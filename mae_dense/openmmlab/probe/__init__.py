"""Frozen-backbone linear probes on mmseg/mmengine (registered on import).

Two ways to feed the same model (:class:`LinearProbeEncoderDecoder`, a frozen ViT and one linear head per
learning rate of a sweep):

* augmented mode: images through the protocol's random augmentation, features computed on the fly;
  a plain mmengine training (``tools/train.py``/``dist_train.sh`` run it as is);
* fast mode: the features of a fixed set of crops (:class:`ProbeFixedCrops`) are computed once by
  :func:`build_feature_cache` into an fp16 cache on disk and every iteration reads them
  (:class:`ProbeFeatureDataset`); the data preprocessor hands them to the heads, skipping the backbone.

Evaluation always runs the backbone on the validation images, every head in the same pass
(:class:`ProbeSweepIoUMetric` reports the best head and its learning rate).

The model is in :mod:`.model`, the crops and the feature cache in :mod:`.data`, the sweep's optimiser
constructor and metric in :mod:`.sweep`.
"""

from .data import ProbeFeatureDataset, ProbeFixedCrops, build_feature_cache
from .model import LinearProbeDecodeHead, LinearProbeEncoderDecoder, ProbeDataPreProcessor
from .sweep import LinearProbeOptimWrapperConstructor, ProbeSweepIoUMetric

__all__ = [
    'LinearProbeDecodeHead',
    'LinearProbeEncoderDecoder',
    'LinearProbeOptimWrapperConstructor',
    'ProbeDataPreProcessor',
    'ProbeFeatureDataset',
    'ProbeFixedCrops',
    'ProbeSweepIoUMetric',
    'build_feature_cache',
]
