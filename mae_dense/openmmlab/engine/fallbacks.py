"""Run the real configs on a machine without CUDA: AMP and SyncBN fall back with one warning line each.

mmengine's ``AmpOptimWrapper`` refuses to start without an accelerator and ``nn.SyncBatchNorm`` needs
CUDA tensors once a process group exists. On CPU, mixed precision becomes bf16 autocast (when the config
asks for bf16) or fp32, and SyncBN becomes BatchNorm, so tests, the demo and smoke runs use the
configs unchanged.

Nothing of mmengine's or mmcv's is replaced: ``AmpOptimWrapper`` and ``SyncBN`` stay what they are for
every config. A run through the project's Runner (:class:`~mae_dense.openmmlab.engine.runner.MAEDenseRunner`,
which the tools use) applies the fallbacks itself on a machine without CUDA: :func:`cpu_fallback_cfg`
names :class:`AmpOptimWrapperWithCpuFallback` in the config's place, and :func:`cpu_fallback_model` turns
the built model's SyncBatchNorm layers (from the config or from a class's default ``norm_cfg``) into
BatchNorm2d. On a CUDA machine nothing is changed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from mmengine.device import is_cuda_available, is_mlu_available, is_musa_available, is_npu_available
from mmengine.logging import print_log
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import MODEL_WRAPPERS, OPTIM_WRAPPERS
from torch import nn

_warned: set[str] = set()


def _warn_once(key: str, msg: str) -> None:
    if key not in _warned:
        _warned.add(key)
        print_log(msg, logger='current', level=logging.WARNING)


def _has_accelerator() -> bool:
    return is_cuda_available() or is_npu_available() or is_mlu_available() or is_musa_available()


@OPTIM_WRAPPERS.register_module(force=True)
class AmpOptimWrapperWithCpuFallback(AmpOptimWrapper):
    """mmengine's AmpOptimWrapper, plus two plain fp32 cases (no autocast, no loss scaler, one log line).

    * ``dtype='float32'``: full precision on any device, as mmseg 0.x's MAE run trained
      (``--cfg-options optim_wrapper.dtype=float32``).
    * No accelerator: bf16 CPU autocast when ``dtype='bfloat16'``, else fp32 (fp16 autocast needs CUDA).
    """

    def __init__(self, loss_scale='dynamic', dtype=None, use_fsdp: bool = False, **kwargs) -> None:
        name = str(dtype).replace('torch.', '') if dtype is not None else None
        fp32 = name == 'float32'
        self.cpu_fallback = not fp32 and not _has_accelerator()
        self.plain = fp32 or self.cpu_fallback  # mmengine's OptimWrapper path, autocast added by hand
        if not self.plain:
            super().__init__(loss_scale=loss_scale, dtype=dtype, use_fsdp=use_fsdp, **kwargs)
            return
        OptimWrapper.__init__(self, **kwargs)
        self.cast_dtype = torch.bfloat16 if name == 'bfloat16' else None
        self.loss_scaler = None
        if fp32:
            _warn_once('fp32', 'AmpOptimWrapper: dtype=float32, training in full precision (no autocast)')
            return
        _warn_once(
            'amp',
            'AmpOptimWrapper: no CUDA device, mixed precision falls back to '
            + ('bf16 autocast on CPU' if self.cast_dtype else 'fp32 on CPU (fp16 autocast needs CUDA)'),
        )

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        if self.plain:
            return OptimWrapper.backward(self, loss, **kwargs)
        return super().backward(loss, **kwargs)

    def step(self, **kwargs) -> None:
        if self.plain:
            return OptimWrapper.step(self, **kwargs)
        return super().step(**kwargs)

    def state_dict(self) -> dict:
        if self.plain:
            return OptimWrapper.state_dict(self)
        return super().state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        if self.plain:
            state_dict = {k: v for k, v in state_dict.items() if k != 'loss_scaler'}
            return OptimWrapper.load_state_dict(self, state_dict)
        return super().load_state_dict(state_dict)

    @contextlib.contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        if not self.plain:
            with super().optim_context(model):
                yield
            return
        autocast = (
            torch.autocast('cpu', dtype=torch.bfloat16) if self.cast_dtype else contextlib.nullcontext()
        )
        with OptimWrapper.optim_context(self, model), autocast:
            yield


@MODEL_WRAPPERS.register_module(force=True)
class MMDistributedDataParallelCPU(MMDistributedDataParallel):
    """mmengine's DDP wrapper for CPU (gloo) processes: mmengine always passes ``device_ids=[LOCAL_RANK]``,
    which DDP rejects for a CPU module."""

    def __init__(self, module, device_ids=None, **kwargs) -> None:
        kwargs.pop('output_device', None)
        super().__init__(module=module, device_ids=None, **kwargs)


def _retype(node: Any, old: str, new: str) -> None:
    """Set ``type=new`` in every dict under ``node`` (through lists too) whose ``type`` is ``old``."""
    if isinstance(node, (list, tuple)):
        for item in node:
            _retype(item, old, new)
    elif isinstance(node, dict):  # (mmengine's ConfigDict is a dict)
        for value in node.values():
            _retype(value, old, new)
        if node.get('type') == old:
            node['type'] = new


def cpu_fallback_cfg(cfg: Any) -> Any:
    """``cfg`` (changed in place, and returned) with the AMP fallback this machine needs, under its own name.

    Without an accelerator, the ``optim_wrapper`` entries of type ``AmpOptimWrapper`` become
    :class:`AmpOptimWrapperWithCpuFallback`, which logs its one line when it is built; with one, nothing
    changes.
    """
    if not _has_accelerator() and cfg.get('optim_wrapper'):
        _retype(cfg['optim_wrapper'], 'AmpOptimWrapper', AmpOptimWrapperWithCpuFallback.__name__)
    return cfg


def _batchnorm2d(sync: nn.SyncBatchNorm) -> nn.BatchNorm2d:
    """A BatchNorm2d with ``sync``'s parameters and buffers (the same tensors: ``requires_grad`` is kept)."""
    bn = nn.BatchNorm2d(sync.num_features, sync.eps, sync.momentum, sync.affine, sync.track_running_stats)
    if sync.affine:
        bn.weight, bn.bias = sync.weight, sync.bias
    bn.running_mean, bn.running_var = sync.running_mean, sync.running_var
    bn.num_batches_tracked = sync.num_batches_tracked
    return bn.train(sync.training)


def cpu_fallback_model(model: nn.Module) -> nn.Module:
    """``model`` with every torch SyncBatchNorm (mmcv's ``SyncBN``) replaced by a BatchNorm2d, without CUDA.

    torch's SyncBatchNorm needs CUDA tensors once a process group exists (DDP refuses it on CPU); one
    warning line says that the statistics are not synchronised. With CUDA, ``model`` is returned unchanged.
    """
    if torch.cuda.is_available():
        return model
    if isinstance(model, nn.SyncBatchNorm):
        _warn_once('syncbn', 'SyncBN: no CUDA device, using BatchNorm2d (statistics are not synchronised)')
        return _batchnorm2d(model)
    for name, child in model.named_children():
        converted = cpu_fallback_model(child)
        if converted is not child:
            setattr(model, name, converted)
    return model
