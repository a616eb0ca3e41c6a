"""Protocol cards: what every number of the store and the leaderboard was measured under.

A card is derived, never kept by hand: from the task's entry in the table of tasks (which config keys hold
the head, the layers, the input size, the schedule), the cell's effective config (:class:`RunConfig`, every
option merged) and the backbone entry (project ViT or a timm model). Its :class:`Protocol` is the part
that decides whether two numbers may be ranked together: task, frozen or fine-tuned, head, layers feeding
the head, input size, single scale or ms+flip, schedule length. The backbone and the config hash are not
in it, so two backbones (or two sizes, or two learning rates) under one protocol share a column group.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from typing import Any

from .tasks import Task, dotted_get

__all__ = ['Protocol', 'card_of', 'describe_protocol', 'layers_label', 'protocol_differences', 'with_test']

# what the project ViT's preset adds at transfer, by its mode (mae_dense/models/vit.py, MODES)
_TRANSFER = {
    'seg': ('relative position bias per block, zero-initialised', 'none (global attention)'),
    'det': ('decomposed relative positions, zero-initialised', 'windows {window} with global blocks'),
    'mae': ('none (frozen as released)', 'none'),
}


@dataclass(frozen=True)
class Protocol:
    """The fields that make two numbers comparable (see the module docstring)."""

    task: str
    frozen: bool
    head: str
    layers: str
    input: str
    ms_flip: bool
    schedule: str

    def key(self) -> tuple:
        return tuple(asdict(self).values())

    @classmethod
    def of(cls, mapping: dict[str, Any]) -> Protocol:
        return cls(**{f.name: mapping[f.name] for f in fields(cls)})


def describe_protocol(p: Protocol) -> str:
    """One line: 'fine-tuned, UPerHead+Feature2Pyramid on blocks 1/3, 1/2, 2/3, 1 of depth, 512x512, ...'."""
    tuning = 'frozen' if p.frozen else 'fine-tuned'
    test = 'ms+flip' if p.ms_flip else 'single scale'
    return f'{p.task}: {tuning}, {p.head} on {p.layers}, input {p.input}, {test}, {p.schedule}'


def protocol_differences(a: Protocol, b: Protocol) -> list[str]:
    """The fields where ``a`` differs from ``b``, each as 'field: a vs b'."""

    def show(field: str, value: Any) -> str:
        if field == 'frozen':
            return 'frozen' if value else 'fine-tuned'
        if field == 'ms_flip':
            return 'ms+flip' if value else 'single scale'
        return str(value)

    return [
        f'{f.name}: {show(f.name, getattr(a, f.name))} vs {show(f.name, getattr(b, f.name))}'
        for f in fields(Protocol)
        if getattr(a, f.name) != getattr(b, f.name)
    ]


def layers_label(indices: list[int] | None, depth: int | None) -> str:
    """The blocks feeding the head, independent of the depth: ViT-B's [3, 5, 7, 11] and ViT-L's
    [7, 11, 15, 23] are both 'blocks 1/3, 1/2, 2/3, 1 of depth'; negative indices count from the last."""
    if not indices:
        return 'last block'
    if all(i < 0 for i in indices):
        return 'last block' if list(indices) == [-1] else f'last {len(indices)} blocks'
    if not depth:
        return 'blocks ' + ', '.join(map(str, indices))
    parts = [Fraction(i + 1, depth) for i in indices]
    if parts == [1]:
        return 'last block'
    return 'blocks ' + ', '.join(str(f) for f in parts) + ' of depth'


def _size(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f'{value[0]}x{value[1]}'
    return f'{value}x{value}' if isinstance(value, int) else str(value)


def _schedule(cfg: Any, task: Task, mode: str | None) -> str:
    keys = task.card.schedule.get(mode or '', task.card.schedule[''])
    for key in keys:
        value = dotted_get(cfg, key)
        if value:
            return f'{value} {"ep" if "epoch" in key else "it"}'
    return 'unknown'


def _backbone(cfg: Any, backbone: Any) -> dict[str, Any]:
    """Source, patch size and what was added at transfer."""
    bb = dotted_get(cfg, 'model.backbone') or {}
    timm = getattr(backbone, 'timm', None)
    if timm:
        from ..models.timm_backbone import timm_arch

        kwargs = dict(getattr(backbone, 'timm_kwargs', {}) or {})
        patch, stride = timm_arch(timm, kwargs).patch_size, bb.get('stride', 16)
        return dict(
            source=f'timm {timm}',
            timm_kwargs=kwargs,
            patch_size=patch if patch == stride else f'{patch} (input resized by {patch}/{stride})',
            rel_pos='none (timm model as released)',
            windows='none: global attention in every block',
        )
    rel_pos, windows = _TRANSFER.get(bb.get('mode'), ('unknown', 'unknown'))
    return dict(
        source='project ViT',
        patch_size=bb.get('patch_size'),
        rel_pos=rel_pos,
        windows=windows.format(window=bb.get('window_size')),
    )


def card_of(
    task: Task, cfg: Any, backbone: Any, mode: str | None = None, sweep: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The card of one cell: its protocol (single-scale test; :func:`with_test` sets ms+flip per number)
    and the rest (backbone source, patch, transfer additions, lr and whether it was searched).

    Args:
        task: the table entry.
        cfg: the cell's effective config (every option merged).
        backbone: the pipeline's backbone entry (``timm``, ``timm_kwargs`` read when present).
        mode: a probe's mode (``fast`` reads its own schedule key).
        sweep: the sweep this cell belongs to (``param``, ``points``, ``point`` or ``chosen``, ``on``).
    """
    keys = task.card
    depth = dotted_get(cfg, 'model.backbone.depth')
    layers = dotted_get(cfg, keys.layers) if keys.layers else None
    head = '+'.join(str(dotted_get(cfg, k)) for k in keys.head if dotted_get(cfg, k))
    protocol = Protocol(
        task=task.name,
        frozen=task.kind == 'probe',
        head=head or 'unknown',
        layers=layers_label(list(layers) if layers else None, depth),
        input=_size(dotted_get(cfg, keys.input)),
        ms_flip=False,
        schedule=_schedule(cfg, task, mode),
    )
    lr = dotted_get(cfg, 'optim_wrapper.optimizer.lr')
    # a probe's heads: its mode's section (``fast_mode``) overrides the model's, as the probe command merges it
    heads = dotted_get(cfg, f'{mode}_mode.model.decode_head.lrs') or dotted_get(cfg, 'model.decode_head.lrs')
    if task.kind == 'probe' and len(heads or ()) > 1:
        searched = 'the probe sweeps its heads (its own lr search)'
    elif sweep:
        searched = f'best of {len(sweep["points"])} on val ({sweep["on"]})'
    else:
        searched = 'not searched (the config lr)'
    return dict(
        protocol=asdict(protocol),
        **_backbone(cfg, backbone),
        mode=mode,
        lr=lr,
        lr_searched=searched,
        sweep=sweep,
        train_set=keys.train_set(cfg) if keys.train_set else None,
    )


def with_test(card: dict[str, Any], ms_flip: bool) -> Protocol | None:
    """The protocol of one number of a cell: its card's, with the test it came from (None: no card)."""
    if not card or 'protocol' not in card:
        return None
    return Protocol.of({**card['protocol'], 'ms_flip': ms_flip})
