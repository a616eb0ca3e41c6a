"""MAE pretraining through mmengine's Runner: model, data, optimisation, loop and hooks (registered on import).

``custom_imports=dict(imports=['mae_dense.openmmlab', 'mae_dense.openmmlab.pretrain'])`` registers:

* ``MAEPretrainer`` (MODELS): mmengine ``BaseModel`` that IS a :class:`MaskedAutoencoder`, so the checkpoint
  a run writes has the MAE's own keys (``backbone.*`` + official decoder names): the ADE20K/COCO configs'
  ``load_backbone`` reads it as it is, and ``load_from`` continues pretraining from it strictly.
* ``MAEDataPreprocessor`` (MODELS): uint8 batch -> device -> ImageNet mean/std, counts unreadable images.
* ``MAEImageFolder`` (DATASETS): :class:`mae_dense.data.image_folder.ImageFolder` logging into the run.
* ``MAEPretrainOptimWrapperConstructor``: AdamW groups by the project's one weight-decay rule
  (:func:`param_rule`, policy ``'mae'``) and lr = base_lr x effective batch / 256, printed at start.
* ``SkipNonFiniteAmpOptimWrapper``: the AmpOptimWrapper (with the CPU fallback) that skips the update of a
  non-finite loss, counts it, and stops after N in a row.
* ``MAEPretrainLoop``: the exact-resume epoch loop (:mod:`.loops`) that tells the constructor the real
  per-process batch size.
* ``MAEPretrainHook``: strict loading of full MAE checkpoints, unreadable-image and non-finite-loss reports
  (``RandomStateHook``, the RNG states in checkpoints, lives in :mod:`.loops`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import BaseDataPreprocessor, BaseModel, is_model_wrapper
from mmengine.registry import (
    DATASETS,
    HOOKS,
    LOOPS,
    MODELS,
    OPTIM_WRAPPER_CONSTRUCTORS,
    OPTIM_WRAPPERS,
    OPTIMIZERS,
)
from torch import nn

from ..data.image_folder import ImageFolder
from ..errors import CheckpointError, NonFiniteLossError
from ..models.archs import mae_config
from ..models.mae import MaskedAutoencoder
from ..optim.layer_decay import param_rule
from .fallbacks import AmpOptimWrapperWithCpuFallback
from .loops import ExactResumeEpochBasedTrainLoop, RandomStateHook, capture_rng_state, restore_rng_state

__all__ = [
    'IMAGENET_MEAN',
    'IMAGENET_STD',
    'MAEDataPreprocessor',
    'MAEImageFolder',
    'MAEPretrainHook',
    'MAEPretrainLoop',
    'MAEPretrainOptimWrapperConstructor',
    'MAEPretrainer',
    'NonFiniteLossError',
    'PRETRAIN_WD_POLICIES',
    'RandomStateHook',
    'SkipNonFiniteAmpOptimWrapper',
    'all_ranks_finite',
    'capture_rng_state',
    'restore_rng_state',
]

# torchvision's ImageNet statistics x 255 (the official ToTensor + Normalize, on uint8 pixels).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
_WARNING = 30


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if is_model_wrapper(model) else model


# ================================================================================================== model
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
        MaskedAutoencoder.__init__(self, **{**(mae_config(arch) if arch else {}), **kwargs})
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


# =================================================================================================== data
@DATASETS.register_module(force=True)
class MAEImageFolder(ImageFolder):
    """:class:`ImageFolder` whose messages go to the run's log (rank 0's console and file)."""

    def _log(self, level: int, msg: str) -> None:
        print_log(msg, logger='current', level=level)


# ========================================================================================== optimisation
# The weight-decay sets of the two published MAE pretraining recipes, as param_rule policies.
PRETRAIN_WD_POLICIES = {
    # mmpretrain/mmselfsup's MAE configs (whose names and published numbers the pretraining configs carry):
    # custom_keys ln, bias, pos_embed, mask_token, cls_token with decay_mult 0.
    'mmpretrain': 'mae',
    # The official main_pretrain.py: timm's add_weight_decay without a skip list exempts only 1-D parameters
    # and biases, so cls_token and mask_token are decayed (the same rule as mmseg's groups).
    'official': 'mmseg',
}


@OPTIM_WRAPPER_CONSTRUCTORS.register_module(force=True)
class MAEPretrainOptimWrapperConstructor:
    """AdamW over two groups (weight decay / none) with the lr scaled by the effective batch.

    ``paramwise_cfg``:
        base_lr (float): blr, the lr for a batch of ``base_batch_size`` (1.5e-4 in the recipe).
        base_batch_size (int): 256.
        batch_size (int): per-process batch; filled in by :class:`MAEPretrainLoop` from the real loader.
        wd_policy (str): which published recipe's weight-decay set (:data:`PRETRAIN_WD_POLICIES`):
            ``'mmpretrain'`` (default) or ``'official'``.

    lr = base_lr x effective batch / base_batch_size, effective batch = per-process batch x
    ``accumulative_counts`` x world size (mmengine's ``auto_scale_lr`` ignores ``accumulative_counts``,
    which is how the recipe's 4096 is reached on fewer GPUs, so it cannot be used here). The groups come
    from the project's one rule, :func:`mae_dense.optim.layer_decay.param_rule`, without layer decay.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        cfg = dict(paramwise_cfg or {})
        unknown = set(cfg) - {'base_lr', 'base_batch_size', 'batch_size', 'wd_policy'}
        if unknown or 'base_lr' not in cfg:
            raise ValueError(
                f'paramwise_cfg={cfg}: expected base_lr and optionally base_batch_size, batch_size, wd_policy'
                f'{f" (unknown: {sorted(unknown)})" if unknown else ""}'
            )
        self.wd_policy = cfg.get('wd_policy', 'mmpretrain')
        if self.wd_policy not in PRETRAIN_WD_POLICIES:
            raise ValueError(
                f'paramwise_cfg.wd_policy={self.wd_policy!r}: expected one of {tuple(PRETRAIN_WD_POLICIES)}'
            )
        self.optim_wrapper_cfg = dict(optim_wrapper_cfg)
        self.optimizer_cfg = dict(self.optim_wrapper_cfg.pop('optimizer'))
        if 'lr' in self.optimizer_cfg:
            raise ValueError(
                'optim_wrapper.optimizer.lr is computed from paramwise_cfg.base_lr and the effective batch; '
                'set optim_wrapper.paramwise_cfg.base_lr instead'
            )
        self.base_lr = float(cfg['base_lr'])
        self.base_batch_size = int(cfg.get('base_batch_size', 256))
        self.batch_size = cfg.get('batch_size')

    def effective_batch(self) -> tuple[int, int, int, int]:
        """(effective batch, per-process batch, accumulation steps, world size)."""
        if self.batch_size is None:
            raise ValueError(
                "the per-process batch size is unknown: use train_cfg=dict(type='MAEPretrainLoop', ...) or "
                'set optim_wrapper.paramwise_cfg.batch_size'
            )
        accumulation = int(self.optim_wrapper_cfg.get('accumulative_counts', 1))
        world = get_world_size()
        return int(self.batch_size) * accumulation * world, int(self.batch_size), accumulation, world

    def __call__(self, model: nn.Module):
        model = _unwrap(model)
        effective, per_process, accumulation, world = self.effective_batch()
        lr = self.base_lr * effective / self.base_batch_size
        weight_decay = float(self.optimizer_cfg.get('weight_decay', 0.0))
        decay, no_decay = [], []
        for name, param in model.named_parameters():
            if not param.requires_grad:  # the fixed sin-cos position tables
                continue
            # the encoder's names are checked under its prefix, the decoder's (mask_token) at the top level
            prefix = 'backbone.' if name.startswith('backbone.') else ''
            rule = param_rule(
                name,
                param.ndim,
                num_layers=0,
                decay_rate=1.0,
                weight_decay=weight_decay,
                policy=PRETRAIN_WD_POLICIES[self.wd_policy],
                prefix=prefix,
            )
            (decay if rule.weight_decay else no_decay).append(param)
        groups = [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]
        print_log(
            f'MAE pretraining: effective batch {effective} = {per_process} per process x {accumulation} '
            f'accumulation steps x {world} processes; lr = base_lr {self.base_lr:g} x {effective} / '
            f'{self.base_batch_size} = {lr:.6g}; weight decay {weight_decay:g} ({self.wd_policy} set) on '
            f'{len(decay)} tensors '
            f'({sum(p.numel() for p in decay)} params), none on {len(no_decay)} '
            f'({sum(p.numel() for p in no_decay)} params)',
            logger='current',
        )
        optimizer = OPTIMIZERS.build(dict(self.optimizer_cfg, lr=lr, params=groups))
        wrapper_cfg = dict(self.optim_wrapper_cfg)
        wrapper_cfg.setdefault('type', 'OptimWrapper')
        wrapper = OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))
        wrapper.effective_batch_size = effective
        return wrapper


def all_ranks_finite(loss: torch.Tensor) -> bool:
    """Whether ``loss`` is finite on every process (one small all-reduce when distributed).

    All processes must agree: a process that skipped its backward while the others ran theirs would leave
    them waiting in DDP's gradient all-reduce.
    """
    finite = torch.isfinite(loss.detach()).all().to(torch.int32).reshape(1)
    if get_world_size() > 1:
        all_reduce(finite, op='min')
    return bool(finite.item())


@OPTIM_WRAPPERS.register_module(force=True)
class SkipNonFiniteAmpOptimWrapper(AmpOptimWrapperWithCpuFallback):
    """``AmpOptimWrapper`` (fp16 + dynamic loss scale or bf16; CPU fallback) that survives a non-finite loss.

    A non-finite loss on any process skips its backward; the optimizer step of its accumulation window
    is skipped (the window's gradients are dropped) and counted. ``max_nonfinite_in_a_row`` consecutive
    non-finite losses stop training with :class:`NonFiniteLossError`. (Non-finite *gradients* under fp16 are
    the loss scaler's business, as in mmengine.) The counters are saved with the optimizer state.

    Args:
        max_nonfinite_in_a_row: consecutive non-finite iterations that abort the run.
        **kwargs: ``AmpOptimWrapper`` arguments (``loss_scale``, ``dtype``, ``accumulative_counts``, ...).
    """

    def __init__(self, *args: Any, max_nonfinite_in_a_row: int = 20, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if max_nonfinite_in_a_row < 1:
            raise ValueError(f'max_nonfinite_in_a_row={max_nonfinite_in_a_row}: expected >= 1')
        self.max_nonfinite_in_a_row = int(max_nonfinite_in_a_row)
        self.nonfinite_losses = 0
        self.skipped_steps = 0
        self.nonfinite_in_a_row = 0
        self._window_poisoned = False

    def update_params(
        self, loss: torch.Tensor, step_kwargs: dict | None = None, zero_kwargs: dict | None = None
    ) -> None:
        if all_ranks_finite(loss):
            self.nonfinite_in_a_row = 0
            self.backward(self.scale_loss(loss))
        else:
            self._inner_count += 1  # backward() counts iterations; keep windows aligned with them
            self._window_poisoned = True
            self.nonfinite_losses += 1
            self.nonfinite_in_a_row += 1
            it = self._inner_count
            if self.nonfinite_in_a_row >= self.max_nonfinite_in_a_row:
                raise NonFiniteLossError(
                    f'the loss was non-finite in {self.nonfinite_in_a_row} iterations in a row (up to '
                    f'iteration {it}, {self.nonfinite_losses} in all); stopping. Lower '
                    'optim_wrapper.paramwise_cfg.base_lr, try optim_wrapper.dtype=bfloat16, or resume from '
                    'an earlier checkpoint'
                )
            print_log(
                f'iteration {it}: non-finite loss ({loss.detach().float().item()} here); optimizer step '
                f'skipped ({self.nonfinite_losses} non-finite so far, {self.nonfinite_in_a_row} in a row; '
                f'stopping at {self.max_nonfinite_in_a_row})',
                logger='current',
                level=_WARNING,
            )
        if self.should_update():
            if self._window_poisoned:
                self.skipped_steps += 1
                self._window_poisoned = False
            else:
                self.step(**(step_kwargs or {}))
            self.zero_grad(**(zero_kwargs or {}))

    def state_dict(self) -> dict:
        state = super().state_dict()
        state['nonfinite'] = dict(
            losses=self.nonfinite_losses, skipped_steps=self.skipped_steps, in_a_row=self.nonfinite_in_a_row
        )
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        counts = state_dict.pop('nonfinite', None)
        if counts:
            self.nonfinite_losses = int(counts['losses'])
            self.skipped_steps = int(counts['skipped_steps'])
            self.nonfinite_in_a_row = int(counts['in_a_row'])
        super().load_state_dict(state_dict)


@LOOPS.register_module(force=True)
class MAEPretrainLoop(ExactResumeEpochBasedTrainLoop):
    """The exact-resume epoch loop that gives ``MAEPretrainOptimWrapperConstructor`` the real batch size.

    The Runner builds the loop (and its loader) just before the optimizer, so the constructor sees the
    per-process batch actually used, including any ``--cfg-options train_dataloader.batch_size=...``.
    """

    def __init__(self, runner, dataloader, max_epochs: int, **kwargs: Any) -> None:
        super().__init__(runner, dataloader, max_epochs, **kwargs)
        cfg = runner.optim_wrapper
        if isinstance(cfg, dict) and cfg.get('constructor') == 'MAEPretrainOptimWrapperConstructor':
            loader = self.dataloader
            batch_size = loader.batch_size or getattr(loader.batch_sampler, 'batch_size', None)
            paramwise = dict(cfg.get('paramwise_cfg') or {})
            paramwise['batch_size'] = batch_size
            cfg['paramwise_cfg'] = paramwise


# ================================================================================================== hooks
@HOOKS.register_module(force=True)
class MAEPretrainHook(Hook):
    """Pretraining bookkeeping.

    * Loading (``load_from`` and resume): the checkpoint must fit the MAE exactly (encoder AND decoder,
      this project's layout or the official ``models_mae.py`` one, e.g. ``checkpoint-799.pth``); anything
      else is a one-line :class:`CheckpointError` instead of mmengine's silent non-strict load.
    * After each epoch: the number of unreadable images skipped (all processes, all loader workers).
    * After training: the non-finite losses and skipped steps, if any.
    """

    priority = 'NORMAL'

    def __init__(self) -> None:
        self._reported_skipped = 0

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = _unwrap(runner.model)
        if not isinstance(model, MaskedAutoencoder):
            return
        try:
            state_dict = model.fit_state_dict(checkpoint)
        except ValueError as exc:
            raise CheckpointError(str(exc)) from None
        checkpoint['state_dict'] = state_dict  # official files are converted to this class's names

    def after_train_epoch(self, runner) -> None:
        preprocessor = getattr(_unwrap(runner.model), 'data_preprocessor', None)
        count = torch.tensor([getattr(preprocessor, 'skipped_images', 0)], dtype=torch.int64)
        if get_world_size() > 1:
            all_reduce(count, op='sum')
        total = int(count.item())
        if total > self._reported_skipped:
            print_log(
                f'epoch {runner.epoch + 1}: {total - self._reported_skipped} unreadable images skipped '
                f'({total} in this run; each replaced by the next readable image, files named above)',
                logger='current',
                level=_WARNING,
            )
            self._reported_skipped = total

    def after_train(self, runner) -> None:
        wrapper = runner.optim_wrapper
        losses = getattr(wrapper, 'nonfinite_losses', 0)
        if losses:
            print_log(
                f'{losses} non-finite losses, {wrapper.skipped_steps} optimizer steps skipped',
                logger='current',
                level=_WARNING,
            )
