"""Layer-wise learning-rate decay as one pure function of a parameter name.

Shared by segmentation, detection and fine-tuning (BEiT/MAE/ViTDet all use the same ids):
embeddings (``cls_token``, ``mask_token``, ``pos_embed``, ``patch_embed``) -> 0, ``blocks.i`` -> i+1,
everything else (final norm, neck, heads) -> L+1; lr scale = rate ** (L + 1 - id).

Two weight-decay policies:
* ``'mae'`` (default, the official MAE fine-tuning recipe): no decay for 1-D parameters (norms, layer
  scale), biases, ``pos_embed``, ``cls_token``, ``mask_token`` and relative position tables.
* ``'mmseg'``: mmseg 1.x's exact groups. Its exemption of ``pos_embed``/``cls_token`` compares unprefixed
  names against ``backbone.``-prefixed ones and never matches, so those and the (2-D) relative position
  tables ARE decayed; only 1-D parameters and biases are exempt. Use it to reproduce its published runs.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_EMBEDDINGS = ('cls_token', 'mask_token', 'pos_embed', 'patch_embed')
_BLOCK = re.compile(r'^blocks\.(\d+)\.')
_TABLES = ('relative_position_bias_table', 'rel_pos_h', 'rel_pos_w')
POLICIES = ('mae', 'mmseg')


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
) -> ParamRule:
    """(layer id, lr scale, weight decay) of one parameter; see the module docstring."""
    if policy not in POLICIES:
        raise ValueError(f'weight-decay policy {policy!r}: expected one of {POLICIES}')
    layer_id = get_layer_id(name, num_layers, prefix)
    scale = decay_rate ** (num_layers + 1 - layer_id)
    exempt = ndim == 1 or name.endswith('.bias')
    if policy == 'mae' and name.startswith(prefix):
        local = name[len(prefix) :]
        exempt = exempt or local.split('.')[0] in ('pos_embed', 'cls_token', 'mask_token')
        exempt = exempt or local.endswith(_TABLES)
    return ParamRule(layer_id, scale, 0.0 if exempt else weight_decay)
