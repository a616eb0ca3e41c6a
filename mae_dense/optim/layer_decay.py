"""Layer-wise learning-rate decay as one pure function of a parameter name.

Shared by segmentation, detection and fine-tuning (BEiT/MAE/ViTDet all use the same ids):
embeddings (``cls_token``, ``mask_token``, ``pos_embed``, ``patch_embed``, and timm's register tokens
``reg_token``) -> 0, ``blocks.i`` -> i+1, everything else (final norm, neck, heads) -> L+1; lr scale =
rate ** (L + 1 - id). A timm backbone (:class:`~mae_dense.models.timm_backbone.TimmViT`) keeps timm's names
under its ``model.`` attribute, so the same rule reads its own block index with the prefix ``backbone.model.``.

Three weight-decay policies:
* ``'mae'`` (default, the official MAE fine-tuning recipe): no decay for 1-D parameters (norms, layer
  scale), biases, ``pos_embed``, ``cls_token``, ``mask_token`` and relative position tables.
* ``'mmseg'``: mmseg 1.x's exact groups. Its exemption of ``pos_embed``/``cls_token`` compares unprefixed
  names against ``backbone.``-prefixed ones and never matches, so those and the (2-D) relative position
  tables ARE decayed; only 1-D parameters and biases are exempt. Use it to reproduce its published runs.
* ``'vitdet'``: detectron2 ViTDet's groups (``get_default_optimizer_params(weight_decay_norm=0.0,
  overrides={'pos_embed': {'weight_decay': 0.0}})``): no decay for the parameters of norm layers and for
  any parameter named ``pos_embed``; biases and the decomposed relative position tables ARE decayed.
  Norm membership is by module type, which a name cannot tell, so the caller passes ``is_norm``
  (:func:`norm_param_names` derives it from a model). detectron2 counts torch's norm classes only
  (:data:`NORM_TYPES`): its channel LayerNorm in the simple feature pyramid and the LN conv heads is a
  plain ``nn.Module``, so those parameters are decayed too; in a ViTDet detector the exempt set is the
  backbone blocks' ``norm1``/``norm2`` and ``pos_embed``, which is also what mmdet's ViTDet port exempts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from torch import nn

_EMBEDDINGS = ('cls_token', 'mask_token', 'pos_embed', 'patch_embed', 'reg_token')
_BLOCK = re.compile(r'^blocks\.(\d+)\.')
_TABLES = ('relative_position_bias_table', 'rel_pos_h', 'rel_pos_w')
POLICIES = ('mae', 'mmseg', 'vitdet')
# detectron2's ``norm_module_types`` (solver/build.py): the torch classes whose parameters 'vitdet' exempts.
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


class ParamRule(NamedTuple):
    layer_id: int
    lr_scale: float
    weight_decay: float


def get_layer_id(name: str, num_layers: int, prefix: str = '') -> int:
    """Layer id of a parameter.

    Args:
        name: parameter name, e.g. ``backbone.blocks.3.attn.qkv.weight``.
        num_layers: L, the number of transformer blocks.
        prefix: the backbone's prefix in ``name`` (``'backbone.'`` in a detector/segmentor, ``''`` for the
            ViT itself); names outside it belong to the head: L+1.
    """
    if not name.startswith(prefix):
        return num_layers + 1
    local = name[len(prefix) :]
    if local.split('.')[0] in _EMBEDDINGS:
        return 0
    m = _BLOCK.match(local)
    if m:
        return int(m.group(1)) + 1
    return num_layers + 1


def param_rule(
    name: str,
    ndim: int,
    num_layers: int,
    decay_rate: float,
    weight_decay: float,
    policy: str = 'mae',
    prefix: str = '',
    is_norm: bool = False,
) -> ParamRule:
    """(layer id, lr scale, weight decay) of one parameter; see the module docstring.

    Args:
        is_norm: the parameter belongs to a norm layer (see :func:`norm_param_names`); read by
            ``'vitdet'`` only (the other policies exempt norms by shape).
    """
    if policy not in POLICIES:
        raise ValueError(f'weight-decay policy {policy!r}: expected one of {POLICIES}')
    layer_id = get_layer_id(name, num_layers, prefix)
    scale = decay_rate ** (num_layers + 1 - layer_id)
    if policy == 'vitdet':
        # detectron2 applies its override by the parameter's own name, wherever the module sits.
        exempt = is_norm or name.rsplit('.', 1)[-1] == 'pos_embed'
        return ParamRule(layer_id, scale, 0.0 if exempt else weight_decay)
    exempt = ndim == 1 or name.endswith('.bias')
    if policy == 'mae' and name.startswith(prefix):
        local = name[len(prefix) :]
        exempt = exempt or local.split('.')[0] in ('pos_embed', 'cls_token', 'mask_token')
        exempt = exempt or local.endswith(_TABLES)
    return ParamRule(layer_id, scale, 0.0 if exempt else weight_decay)


def no_weight_decay_names(named_parameters: Iterable[tuple[str, nn.Parameter]]) -> set[str]:
    """timm's ``no_weight_decay()`` set under policy ``'mae'``: the exempt names beyond 1-D and biases.

    A ViT's names are read as they are, an MAE's encoder names under its ``backbone.`` prefix.
    (timm's optimizer factory exempts 1-D parameters and biases by itself, so they are not listed.)
    """
    return {
        name
        for name, p in named_parameters
        if p.ndim > 1
        and not name.endswith('.bias')
        and param_rule(name, p.ndim, 0, 1.0, 1.0, 'mae', encoder_prefix(name)).weight_decay == 0.0
    }


def encoder_prefix(name: str) -> str:
    """The prefix under which ``name`` is an encoder (ViT) name: ``'backbone.'`` inside an MAE, else ``''``."""
    return 'backbone.' if name.startswith('backbone.') else ''


def norm_param_names(model: nn.Module, norm_types: tuple[type[nn.Module], ...] = NORM_TYPES) -> set[str]:
    """Names of the parameters owned directly by modules of ``norm_types`` (detectron2's rule)."""
    names = set()
    for module_name, module in model.named_modules():
        if isinstance(module, norm_types):
            for param_name, _ in module.named_parameters(recurse=False):
                names.add(f'{module_name}.{param_name}' if module_name else param_name)
    return names
