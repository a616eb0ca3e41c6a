"""The one loader: any known checkpoint layout onto the project's ViT, strictly, with a one-line report."""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import CheckpointError
from ..layers import (
    Attention,
    Block,
    resize_abs_pos_embed,
    resize_beit_rel_pos_table,
    resize_decomposed_rel_pos,
)
from .layouts import Layout, detect, split_backbone, unwrap
from .safe_load import load_file

logger = logging.getLogger('mae_dense')

_TABLE_BEIT = 'attn.relative_position_bias_table'
_TABLE_DECOMP = ('attn.rel_pos_h', 'attn.rel_pos_w')


def kind(key: str) -> str:
    """``blocks.3.attn.qkv.weight`` -> ``blocks.*.attn.qkv.weight``."""
    return re.sub(r'^blocks\.\d+\.', 'blocks.*.', key)


def _group(keys) -> str:
    """Compact listing: ``blocks.*.gamma_1 (12), norm.weight``."""
    counts: dict[str, int] = {}
    for k in keys:
        counts[kind(k)] = counts.get(kind(k), 0) + 1
    return ', '.join(f'{k} ({n})' if n > 1 else k for k, n in sorted(counts.items())) or 'nothing'


def _group_others(keys, prefix: str = '') -> str:
    """Compact listing by module: ``decoder_blocks (8), mask_token``. A key that shares the first names of
    the backbone's ``prefix`` is listed one name deeper (``base_encoder.head (8)``, ``teacher.head (6)``
    beside ``momentum_encoder (152)``), so that a head is named apart from its encoder."""
    shared = prefix.split('.')[:-1]
    counts: dict[str, int] = {}
    for k in keys:
        parts = k.split('.')
        depth = 0
        while depth < min(len(shared), len(parts) - 1) and parts[depth] == shared[depth]:
            depth += 1
        head = '.'.join(parts[: depth + 1])
        counts[head] = counts.get(head, 0) + 1
    return ', '.join(f'{k} ({n})' if n > 1 else k for k, n in sorted(counts.items())) or 'nothing'


@dataclass
class LoadReport:
    """What a load did; ``str(report)`` is the one summary line."""

    source: str
    layout: Layout
    loaded: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    dropped_other: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        dropped = ', '.join(
            x
            for x in (
                _group(self.dropped) if self.dropped else '',
                _group_others(self.dropped_other, self.layout.prefix) if self.dropped_other else '',
            )
            if x
        )
        notes = f'; {"; ".join(self.notes)}' if self.notes else ''
        return (
            f'{self.source}: {self.layout.source} layout, loaded {len(self.loaded)} tensors; '
            f'freshly initialised: {_group(self.fresh)}; dropped: {dropped or "nothing"}{notes}'
        )


def optional_keys(model: nn.Module, layout: Layout) -> frozenset[str]:
    """The keys of ``model`` (the project's ViT) that a ``layout`` file may lack; they keep their init.

    A pretrained ViT is a patch embedding, a position table and blocks of norms, attention and MLP: a file
    without one of those is another architecture. The target may have more, by options that a plain ViT
    has not used: a relative position bias (``rel_pos``: BEiT's table or ViTDet's ``rel_pos_h``/
    ``rel_pos_w``, zero at init) and layer scale (``init_values``: ``gamma_1``/``gamma_2``); fine-tuning
    from an MAE release starts them from that init (mmseg, ViTDet). They are the attention's and the
    block's own parameters (the rest lives in their Linear/LayerNorm children), so they follow the
    model's options without a name list. The cls token, the final norm and the absolute position table
    belong to the plain ViT: they may be lacking only where the layout says its sources do not always carry
    them (a lacking position table is then zero: :func:`load_backbone`).
    """
    keys: set[str] = set()
    for name, module in model.named_modules():
        option_on = (isinstance(module, Attention) and module.rel_pos is not None) or (
            isinstance(module, Block) and module.gamma_1 is not None
        )
        if option_on:
            keys.update(f'{name}.{p}' for p, _ in module.named_parameters(recurse=False))
    if not layout.carries_cls_token and model.cls_token is not None:
        keys.add('cls_token')
    if not layout.carries_final_norm:
        keys.update(f'norm.{p}' for p, _ in model.norm.named_parameters())
    if not layout.carries_pos_embed:
        keys.add('pos_embed')
    return frozenset(keys)


def _square_side(n: int) -> int | None:
    side = int(round(math.sqrt(n)))
    return side if side * side == n else None


def _adapt(
    name: str, value: torch.Tensor, target: torch.Tensor, model: nn.Module, where: str
) -> torch.Tensor:
    """Resize position tables so that they fit the target; other tensors pass unchanged."""
    if value.shape == target.shape:
        return value
    if name == 'pos_embed' and value.ndim == 3 and value.shape[-1] == target.shape[-1]:
        n_src = value.shape[1]
        src_prefix = 0 if _square_side(n_src) else 1
        side = _square_side(n_src - src_prefix)
        if side is None:
            raise CheckpointError(f'{where}: pos_embed has {n_src} rows, not a square grid (+cls)')
        if src_prefix == 0:  # a file without the cls row: the target's cls row stays as initialised
            value = torch.cat([target[:, :1].to(value.dtype), value], dim=1)
        grid = getattr(model, 'pos_grid', None) or (_square_side(target.shape[1] - 1),) * 2
        return resize_abs_pos_embed(value, tuple(grid), (side, side), num_prefix=1)
    if name.endswith(_TABLE_BEIT) and value.ndim == 2 and value.shape[1] == target.shape[1]:
        src_side, dst_side = _square_side(value.shape[0] - 3), _square_side(target.shape[0] - 3)
        if src_side is None or dst_side is None:
            raise CheckpointError(f'{where}: {name} has {value.shape[0]} rows, not (2W-1)^2+3')
        src_w, dst_w = (src_side + 1) // 2, (dst_side + 1) // 2
        return resize_beit_rel_pos_table(value, (src_w, src_w), (dst_w, dst_w))
    if name.endswith(_TABLE_DECOMP) and value.ndim == 2 and value.shape[1] == target.shape[1]:
        return resize_decomposed_rel_pos(value, target.shape[0])
    raise CheckpointError(
        f'{where}: {name} has shape {tuple(value.shape)} in the file but '
        f'{tuple(target.shape)} in the model (wrong architecture size?)'
    )


def read_state_dict(src: str | os.PathLike | Mapping) -> tuple[dict[str, torch.Tensor], str]:
    """A state dict from a path/URL (through the loading policy) or an in-memory checkpoint."""
    if isinstance(src, Mapping):
        return unwrap(src, '<state dict>'), '<state dict>'
    return unwrap(load_file(src), str(src)), str(src)


def load_backbone(model: nn.Module, src: str | os.PathLike | Mapping, log: bool = True) -> LoadReport:
    """Load any recognised checkpoint into the project's :class:`VisionTransformer`, strictly.

    Missing and unexpected keys are compared with what the file's layout predicts for this model: the
    tensors :func:`optional_keys` allows (relative tables, layer scale, a cls token or final norm the
    layout's source lacks) are freshly initialised, and a position table the file lacks (BEiT with relative
    positions only) is zero; tensors the model does not have (final norm, decoder, mask token, heads, a
    MoCo v3 momentum encoder, a DINO student) are dropped and named. Anything else raises :class:`CheckpointError` with the key list.
    """
    sd, where = read_state_dict(src)
    layout = detect(sd, where)
    backbone, others, notes = split_backbone(sd, layout)
    target = model.state_dict()
    target_kinds = {kind(k) for k in target}
    optional = optional_keys(model, layout)
    report = LoadReport(where, layout, notes=notes, dropped_other=sorted(others))

    to_load: dict[str, torch.Tensor] = {}
    unexpected = []
    for name, value in backbone.items():
        if name in target:
            to_load[name] = _adapt(name, value, target[name], model, where).to(target[name].dtype)
        elif kind(name) in target_kinds:
            unexpected.append(name)  # e.g. blocks.12.* into a 12-block model: a different architecture
        else:
            report.dropped.append(name)  # the target has no such tensor (final norm, cls for ViTDet, ...)
    missing = [k for k in target if k not in to_load]
    unpredicted = [k for k in missing if k not in optional]
    if unexpected or unpredicted:
        parts = []
        if unpredicted:
            parts.append(f'missing {_group(unpredicted)}')
        if unexpected:
            parts.append(f'unexpected {_group(unexpected)}')
        raise CheckpointError(
            f'{where}: does not fit the model as a {layout.source} checkpoint: ' + '; '.join(parts)
        )
    model.load_state_dict(to_load, strict=False)
    if 'pos_embed' in missing:  # BEiT with relative positions only: no absolute term, as BEiT computes
        with torch.no_grad():
            model.pos_embed.zero_()
        report.notes.append('pos_embed zero (the file has relative positions only)')
    report.loaded = sorted(to_load)
    report.fresh = missing
    if log:
        _log_rank0(str(report))
    return report


def _log_rank0(msg: str) -> None:
    if (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_rank()
    ):
        return
    if not logger.handlers and not logging.getLogger().handlers:
        print(msg, flush=True)
    else:
        logger.info(msg)


def load_model(
    model: nn.Module, src: str | os.PathLike | Mapping, backbone_attr: str = 'backbone', log: bool = True
) -> LoadReport:
    """Load a full model (segmentor/detector) checkpoint whose backbone may be in any known layout.

    The backbone part is renamed to the project's names (e.g. a released mmseg 0.x/1.x UperNet-MAE file);
    neck and heads must match by name. Loading is strict: every key of the model must be in the file and
    every key of the file in the model (buffers recomputed at run time excepted), or it raises with the
    key list.
    """
    sd, where = read_state_dict(src)
    backbone = getattr(model, backbone_attr, None)
    if getattr(backbone, 'saves_own_names', False):  # a timm backbone: its fine-tuned models keep its names
        layout = Layout('timm', backbone_attr + '.', f'timm {backbone.model_name}')
        full, notes = dict(sd), []
    else:
        layout = detect(sd, where)
        prefix = backbone_attr + '.'
        if layout.prefix != prefix:
            raise CheckpointError(
                f'{where}: a {layout.source} checkpoint, not a full model with the backbone under '
                f"'{prefix}'; pass it as the backbone's pretrained weights instead"
            )
        backbone_sd, others, notes = split_backbone(sd, layout)
        full = {prefix + k: v for k, v in backbone_sd.items()} | others
    _check_full(model, full, where, layout)
    model.load_state_dict(full, strict=True)
    report = LoadReport(where, layout, loaded=sorted(full), notes=notes)
    if log:
        _log_rank0(
            f'{where}: full model ({layout.source} layout), loaded {len(full)} tensors strictly'
            + (f'; {"; ".join(notes)}' if notes else '')
        )
    return report


def _check_full(model: nn.Module, full: Mapping[str, torch.Tensor], where: str, layout: Layout) -> None:
    """Every key of the model in ``full`` and every key of ``full`` in the model, with its shape."""
    target = model.state_dict()
    missing = [k for k in target if k not in full]
    unexpected = [k for k in full if k not in target]
    if missing or unexpected:
        parts = ([f'missing {_group_others(missing)} ({", ".join(missing[:4])}...)'] if missing else []) + (
            [f'unexpected {_group_others(unexpected)} ({", ".join(unexpected[:4])}...)'] if unexpected else []
        )
        raise CheckpointError(
            f'{where}: does not fit the model ({layout.source} layout): ' + '; '.join(parts)
        )
    for k, v in full.items():
        if v.shape != target[k].shape:
            raise CheckpointError(
                f'{where}: {k} has shape {tuple(v.shape)} in the file but '
                f'{tuple(target[k].shape)} in the model'
            )


# ------------------------------------------------------------------------------------------- a full MAE
def fit_full_mae(
    model: nn.Module, src: str | os.PathLike | Mapping, where: str | None = None
) -> dict[str, torch.Tensor]:
    """A full MAE checkpoint (encoder AND decoder) in ``model``'s names, checked to fit it exactly.

    ``model`` is a :class:`~mae_dense.models.mae.MaskedAutoencoder` (its encoder under ``backbone.``). The
    file may be in the official ``models_mae.py`` layout (encoder keys without a prefix: ``cls_token``,
    ``pos_embed``, ``blocks.i.*``, ``norm.*``, then ``mask_token`` and ``decoder_*``; e.g.
    ``mae_visualize_vit_large.pth`` or a ``checkpoint-N.pth``) or in the model's own; ``model``/
    ``state_dict`` wrappers and a ``module.`` prefix are removed.

    Raises:
        CheckpointError: one line (starting with ``where``, the file's name by default) naming the missing,
            unexpected or wrongly shaped keys.
    """
    sd, name = read_state_dict(src)
    where = where or name
    own = model.state_dict()
    encoder_roots = {k.split('.', 2)[1] for k in own if k.startswith('backbone.')}
    sd = {f'backbone.{k}' if k.split('.', 1)[0] in encoder_roots else k: v for k, v in sd.items()}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f'{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}'
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f'missing keys: {", ".join(missing)}')
    if unexpected:
        problems.append(f'unexpected keys: {", ".join(unexpected)}')
    if shapes:
        problems.append(f'shape mismatch (checkpoint vs model): {"; ".join(shapes)}')
    if problems:
        raise CheckpointError(f'{where}: MAE checkpoint does not fit the model: ' + ' | '.join(problems))
    return sd


def load_full_mae(model: nn.Module, src: str | os.PathLike | Mapping, where: str | None = None) -> None:
    """Load a full MAE checkpoint into ``model`` strictly (:func:`fit_full_mae`)."""
    model.load_state_dict(fit_full_mae(model, src, where), strict=True)
