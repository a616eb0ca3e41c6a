"""MAE pretraining's model and data (registered on import).

* ``MAEPretrainer`` (MODELS): mmengine ``BaseModel`` that IS a :class:`MaskedAutoencoder`, so the checkpoint
  a run writes has the MAE's own keys (``backbone.*`` + official decoder names): the ADE20K/COCO configs'
  ``load_backbone`` reads it as it is, and ``load_from`` continues pretraining from it strictly.
* ``MAEDataPreprocessor`` (MODELS): uint8 batch -> device -> ImageNet mean/std, counts unreadable images.
* ``MAEImageFolder`` (DATASETS): :class:`mae_dense.data.image_folder.ImageFolder` logging into the run.

The rest of a pretraining run is beside it: the optimizer constructor and the wrapper that skips
non-finite losses in :mod:`.optim`, the epoch loop in :mod:`.loop`, the hook in :mod:`.hooks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from mmengine.logging import print_log
from mmengine.model import BaseDataPreprocessor, BaseModel
from mmengine.registry import DATASETS, MODELS
from torch import nn

from ...data.image_folder import ImageFolder
from ...models.archs import mae_config
from ...models.mae import MaskedAutoencoder

__all__ = ['IMAGENET_MEAN', 'IMAGENET_STD', 'MAEDataPreprocessor', 'MAEImageFolder', 'MAEPretrainer']

# torchvision's ImageNet statistics x 255 (the official ToTensor + Normalize, on uint8 pixels).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@MODELS.register_module(force=True)
class MAEDataPreprocessor(BaseDataPreprocessor):
    """Stack the uint8 batch, copy it to the device, then normalise there (4x less to copy than float).

    Args:
        mean: per-channel mean in 0..255 (ImageNet's).
        std: per-channel std in 0..255.
        non_blocking: asynchronous host-to-device copy (the loader pins memory).

    Samples that stood in for unreadable files report it (``skipped``); the count is kept in
    :attr:`skipped_images` so that it is exact whatever the number of loader workers.
    """

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        non_blocking: bool = True,
    ) -> None:
        super().__init__(non_blocking=non_blocking)
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.skipped_images = 0

    def forward(self, data: dict, training: bool = False) -> dict:
        """``dict(inputs=uint8 (N, 3, H, W) or list of (3, H, W), [skipped])`` -> normalised float inputs."""
        data = dict(data)
        skipped = data.pop('skipped', None)
        if skipped is not None:
            self.skipped_images += int(torch.as_tensor(skipped).sum())
        inputs = data['inputs']
        if isinstance(inputs, (list, tuple)):
            inputs = torch.stack(list(inputs))
        inputs = self.cast_data(inputs)
        inputs = (inputs.float() - self.mean) / self.std
        return dict(inputs=inputs, data_samples=data.get('data_samples'))


@MODELS.register_module(force=True)
class MAEPretrainer(MaskedAutoencoder, BaseModel):
    """mmengine model for MAE pretraining: a :class:`MaskedAutoencoder` with a data preprocessor.

    It inherits the autoencoder rather than holding one, so its state dict is the autoencoder's own
    (``backbone.*``, ``mask_token``, ``decoder_*``; the preprocessor has no persistent state).

    Args:
        arch: ``'base'``, ``'large'``, ``'huge'`` (:data:`mae_dense.models.archs.ARCHS`), or ``None`` for
            a model of another size given entirely by ``kwargs`` (``embed_dim``, ``depth``, ...).
        data_preprocessor: config or module; ``MAEDataPreprocessor`` (ImageNet mean/std) by default.
        **kwargs: :class:`MaskedAutoencoder` arguments over the arch's (``img_size``, ``mask_ratio``,
            ``norm_pix_loss``, ``grad_checkpointing``, ...).
    """

    def __init__(
        self, arch: str | None = 'base', data_preprocessor: dict | nn.Module | None = None, **kwargs: Any
    ) -> None:
        # MaskedAutoencoder's super().__init__() is BaseModel's (MRO): it installs a default preprocessor.
        MaskedAutoencoder.__init__(self, **mae_config(arch, **kwargs))
        self.arch = arch
        if data_preprocessor is None:
            data_preprocessor = dict(type='MAEDataPreprocessor')
        if isinstance(data_preprocessor, dict):
            data_preprocessor = MODELS.build(data_preprocessor)
        self.data_preprocessor = data_preprocessor

    def init_weights(self) -> None:
        """Nothing to do: the constructor applied the official init (mmengine's pass would redo the ViT's)."""
        self._is_init = True

    def forward(
        self,
        inputs: torch.Tensor,
        data_samples: Any = None,
        mode: str = 'loss',
        noise: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``mode='loss'``: ``dict(loss=...)``; ``'tensor'``: ``(loss, pred, mask)``.

        Args:
            inputs: (N, 3, H, W), normalised.
            data_samples: unused (MAE needs no labels).
            mode: ``'loss'`` or ``'tensor'``.
            noise: optional (N, L) masking noise (fixed masks in tests).
        """
        if mode not in ('loss', 'tensor'):
            raise ValueError(f"MAEPretrainer: mode={mode!r}: expected 'loss' or 'tensor'")
        loss, pred, mask = MaskedAutoencoder.forward(self, inputs, noise=noise)
        return dict(loss=loss) if mode == 'loss' else (loss, pred, mask)


@DATASETS.register_module(force=True)
class MAEImageFolder(ImageFolder):
    """:class:`ImageFolder` whose messages go to the run's log (rank 0's console and file)."""

    def _log(self, level: int, msg: str) -> None:
        print_log(msg, logger='current', level=level)
