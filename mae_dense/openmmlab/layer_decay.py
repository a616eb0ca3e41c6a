"""Layer-wise lr decay for a ViT inside any segmentor or detector, over the project's one rule
(:func:`mae_dense.optim.layer_decay.param_rule`): ``ViTLayerDecayOptimizerConstructor``."""

from __future__ import annotations

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

from ..optim.layer_decay import norm_param_names, param_rule

__all__ = ['ViTLayerDecayOptimizerConstructor', 'format_groups']


@OPTIM_WRAPPER_CONSTRUCTORS.register_module(force=True)
class ViTLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Layer-wise LR decay for a ViT backbone inside any model.

    ``paramwise_cfg``:
        num_layers (int): transformer blocks L.
        layer_decay_rate (float): per-layer lr factor (0.65 seg B, 0.7/0.8 det B/L, 0.75 fine-tune).
        wd_policy (str): ``'mae'`` (default), ``'mmseg'`` (mmseg's exact groups) or ``'vitdet'``
            (detectron2 ViTDet's: norm layers, found by module type, and ``pos_embed``; see the decay module).
        backbone_prefix (str): where the ViT's block names start in the model (``'backbone.'``; a timm
            backbone keeps timm's names under ``'backbone.model.'``, which the suite's placement sets).
    """

    def add_params(self, params: list, module: nn.Module, **kwargs) -> None:
        cfg = dict(self.paramwise_cfg)
        unknown = set(cfg) - {'num_layers', 'layer_decay_rate', 'wd_policy', 'backbone_prefix'}
        if unknown or 'num_layers' not in cfg or 'layer_decay_rate' not in cfg:
            raise ValueError(
                f'paramwise_cfg={cfg}: expected num_layers, layer_decay_rate and optionally '
                f'wd_policy, backbone_prefix{f" (unknown: {sorted(unknown)})" if unknown else ""}'
            )
        num_layers, rate = int(cfg['num_layers']), float(cfg['layer_decay_rate'])
        policy, prefix = cfg.get('wd_policy', 'mae'), cfg.get('backbone_prefix', 'backbone.')
        norms = norm_param_names(module) if policy == 'vitdet' else set()
        groups: dict[tuple[int, float], dict] = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            rule = param_rule(
                name, param.ndim, num_layers, rate, self.base_wd or 0.0, policy, prefix, is_norm=name in norms
            )
            group = groups.setdefault(
                (rule.layer_id, rule.weight_decay),
                dict(
                    params=[],
                    lr=self.base_lr * rule.lr_scale,
                    weight_decay=rule.weight_decay,
                    layer_id=rule.layer_id,
                    lr_scale=rule.lr_scale,
                ),
            )
            group['params'].append(param)
        ordered = [groups[k] for k in sorted(groups)]
        params.extend(ordered)
        print_log(format_groups(ordered, policy), logger='current')


def format_groups(groups: list[dict], policy: str) -> str:
    """A compact table: one row per (layer id, weight decay) group."""
    lines = [
        f'layer-wise lr decay ({policy} weight-decay policy): layer  lr_scale  weight_decay  tensors  numel'
    ]
    for g in groups:
        numel = sum(p.numel() for p in g['params'])
        lines.append(
            f'  {g["layer_id"]:>4}  {g["lr_scale"]:.6f}  {g["weight_decay"]:<12g}  '
            f'{len(g["params"]):>7}  {numel}'
        )
    return '\n'.join(lines)
