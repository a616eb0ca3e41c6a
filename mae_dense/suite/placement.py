"""Where a backbone of another size, or a timm backbone, goes in a task's config: the dotted config keys each
of its numbers sets (:class:`Placement`, one per task in the table of tasks), and the reader of dotted keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..models.archs import Arch

__all__ = ['Placement', 'dotted_get']


def dotted_get(node: Any, dotted: str) -> Any:
    """The value at ``a.b.c`` in nested mappings or a config (None where a level is missing)."""
    for part in dotted.split('.'):
        node = node.get(part) if hasattr(node, 'get') else None
    return node


@dataclass(frozen=True)
class Placement:
    """Where a ViT of another size goes in a task's config: the dotted config keys each of its numbers sets.

    The shipped configs are ViT-B; a backbone entry with ``arch: large`` (or its own dimensions) gets these
    keys as ``--cfg-options``, so the neck and heads take its width and the layer decay its depth. The
    recipe's own numbers (layer-decay rate, drop path, lr) stay the config's: a size's published recipe is
    its own config.

    Args:
        width: keys set to the width; a key that holds a list gets a list of the same length (UperNet's
            four ``in_channels``).
        width_per_output: (key, key of the list of output layers): the width times that list's length
            (the probe's concatenated layers).
        depth: keys set to the number of blocks (the backbone's, and the layer-decay constructor's).
        heads: keys set to the number of attention heads.
        patch: keys set to the patch size.
        outputs: the key of the output blocks (non-negative indices), moved to the same relative depth:
            ViT-B's ``[3, 5, 7, 11]`` becomes ViT-L's ``[7, 11, 15, 23]``.
        timm_type: the registered backbone a timm entry replaces ``model.backbone`` with.
        timm_carry: keys of the config's own backbone that the timm backbone takes over (the recipe's
            drop path; the probe's layers and seed).
        decay_prefix: the key of the layer-decay constructor's backbone prefix (None: no layer decay);
            a timm backbone keeps timm's names under ``backbone.model.``.
    """

    width: tuple[str, ...]
    depth: tuple[str, ...] = ('model.backbone.depth', 'optim_wrapper.paramwise_cfg.num_layers')
    heads: tuple[str, ...] = ('model.backbone.num_heads',)
    patch: tuple[str, ...] = ('model.backbone.patch_size',)
    width_per_output: tuple[tuple[str, str], ...] = ()
    outputs: str | None = None
    depth_key: str = 'model.backbone.depth'  # where the config's own depth is read
    timm_type: str = 'MAEDenseTimmViT'
    timm_carry: tuple[str, ...] = ('drop_path_rate',)
    decay_prefix: str | None = 'optim_wrapper.paramwise_cfg.backbone_prefix'

    def options(self, arch: Arch, cfg: Any) -> dict[str, Any]:
        """The ``--cfg-options`` that put ``arch`` into ``cfg`` (a config, read with its own options)."""

        def get(dotted: str) -> Any:
            return dotted_get(cfg, dotted)

        options: dict[str, Any] = {}
        for key in self.width:
            current = get(key)
            options[key] = [arch.embed_dim] * len(current) if isinstance(current, list) else arch.embed_dim
        for key, outputs in self.width_per_output:
            options[key] = arch.embed_dim * len(get(outputs))
        options.update(dict.fromkeys(self.depth, arch.depth))
        options.update(dict.fromkeys(self.heads, arch.num_heads))
        options.update(dict.fromkeys(self.patch, arch.patch_size))
        if self.outputs is not None:
            old = get(self.depth_key)
            # block i is the (i + 1)/old-th part of the way up: the same part of the new depth, rounded
            blocks = [max(0, int((i + 1) * arch.depth / old + 0.5) - 1) for i in get(self.outputs)]
            if len(set(blocks)) < len(blocks):
                raise ValueError(
                    f'{self.outputs}: {len(blocks)} output blocks do not fit {arch.short} ({arch.depth} blocks)'
                )
            options[self.outputs] = blocks
        return options

    def timm_options(
        self, arch: Arch, model_name: str, timm_kwargs: dict[str, Any], cfg: Any
    ) -> dict[str, Any]:
        """The ``--cfg-options`` that replace ``cfg``'s backbone by timm's ``model_name`` (of size ``arch``):
        the neck/head widths, layer-decay depth and output blocks of :meth:`options`, and the backbone
        dict itself (``_delete_``: the project ViT's own keys do not reach the timm backbone)."""
        sized = self.options(arch, cfg)
        backbone = 'model.backbone.'
        options = {k: v for k, v in sized.items() if not k.startswith(backbone)}
        new: dict[str, Any] = {'_delete_': True, 'type': self.timm_type, 'model_name': model_name}
        for key in self.timm_carry:
            value = dotted_get(cfg, backbone + key)
            if value is not None:
                new[key] = value
        if self.outputs is not None:  # under the config's own key (out_indices, or a probe's layers)
            new[self.outputs[len(backbone) :]] = sized[self.outputs]
        new.update({f'timm_kwargs.{k}': v for k, v in timm_kwargs.items()})
        options.update({backbone + k: v for k, v in new.items()})
        if self.decay_prefix is not None:
            options[self.decay_prefix] = 'backbone.model.'
        return options
