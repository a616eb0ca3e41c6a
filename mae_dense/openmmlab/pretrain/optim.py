"""MAE pretraining's optimisation, over the project's one rule (:func:`mae_dense.optim.layer_decay.param_rule`).

* ``MAEPretrainOptimWrapperConstructor``: MAE pretraining's two groups and lr from the effective batch.
* ``SkipNonFiniteAmpOptimWrapper``: the AmpOptimWrapper (with the CPU fallback) that skips the update of a
  non-finite loss, counts it, and stops after N in a row.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.logging import print_log
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS
from torch import nn

from ...errors import NonFiniteLossError
from ...optim.layer_decay import encoder_prefix, param_rule
from ..engine.fallbacks import AmpOptimWrapperWithCpuFallback
from ..engine.runner import unwrap_model

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
        model = unwrap_model(model)
        effective, per_process, accumulation, world = self.effective_batch()
        lr = self.base_lr * effective / self.base_batch_size
        weight_decay = float(self.optimizer_cfg.get('weight_decay', 0.0))
        decay, no_decay = [], []
        for name, param in model.named_parameters():
            if not param.requires_grad:  # the fixed sin-cos position tables
                continue
            # the encoder's names are checked under its prefix, the decoder's (mask_token) at the top level
            rule = param_rule(
                name,
                param.ndim,
                num_layers=0,
                decay_rate=1.0,
                weight_decay=weight_decay,
                policy=PRETRAIN_WD_POLICIES[self.wd_policy],
                prefix=encoder_prefix(name),
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
                level=logging.WARNING,
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
