"""Checkpoint layouts: recognise a state dict by its keys and map it to the project's (timm) names.

The project's ViT uses the timm/official MAE names (``blocks.i.norm1``, ``mlp.fc1``, ``patch_embed.proj``,
final ``norm``). Every other layout is one invertible rename table away:

=================  ==========================================================================
layout             recognised by
=================  ==========================================================================
``mae``            ``blocks.i.*`` + ``cls_token`` (official MAE release, timm ViT); with
                   ``decoder_embed.*``/``mask_token`` it is a full MAE training checkpoint
``beit``           ``blocks.i.*`` with ``gamma_1``, ``q_bias``/``v_bias`` or BEiT tables
``mm``             ``layers.i.ln1`` (mmseg 0.x/1.x MAE/BEiT, mmpretrain/mmselfsup, beit2mmseg);
                   the mmpretrain MAE decoder lives under ``neck.*``
``vitdet``         ``blocks.i.attn.rel_pos_h`` (mmdet ViTDet; detectron2 under ``backbone.net.``)
``mocov3``         ``base_encoder.blocks.i.*`` (MoCo v3 ``vit-*-300ep.pth.tar``: the base encoder is taken,
                   its projector ``base_encoder.head``, the momentum encoder and the predictor dropped)
``dino``           ``teacher.backbone.blocks.i.*`` (DINO ``*_full_checkpoint.pth``, iBOT ``checkpoint.pth``:
                   the teacher's backbone, what their evaluation code takes with ``checkpoint_key teacher``)
=================  ==========================================================================

Bare-backbone releases in timm names (DINO ``dino_vitbase16_pretrain.pth``, iBOT ``checkpoint_teacher.pth``,
DeiT ``deit_base_patch16_224-b5f2ef4d.pth``) are the ``mae`` layout; their heads are dropped. A distilled DeiT
(``dist_token``) is refused: the project's ViT has one cls token.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..errors import CheckpointError

# Canonical (timm) fragment <-> OpenMMLab (mmseg/mmpretrain) fragment, within a block and at top level.
_MM_BLOCK = (
    ('norm1', 'ln1'),
    ('norm2', 'ln2'),
    ('mlp.fc1', 'ffn.layers.0.0'),
    ('mlp.fc2', 'ffn.layers.1'),
)
_MM_TOP = (
    ('patch_embed.proj', 'patch_embed.projection'),
    ('norm', 'ln1'),  # final norm: mmpretrain/mmseg call it ln1 at backbone level
)

# Keys that never belong to a backbone state dict: buffers recomputed at run time.
_BUFFERS = re.compile(r'(^|\.)(relative_position_index|relative_coords_table)$')


@dataclass(frozen=True)
class Layout:
    """A recognised layout.

    Attributes:
        name: ``mae``, ``beit``, ``mm`` or ``vitdet``.
        prefix: the backbone's prefix inside the file (``''``, ``backbone.``, ``backbone.net.``).
        source: a human description (for the summary line).
        carries_final_norm: every file of this layout has the final ``norm``. False where some sources
            leave it out: ``beit`` (BEiT with mean pooling keeps ``fc_norm`` instead; the project's seg
            backbones have none), ``mm`` (mmseg's MAE/BEiT backbones, ``final_norm=False``), ``vitdet``.
        carries_cls_token: every file of this layout has ``cls_token`` (ViTDet has none).
        carries_pos_embed: every file of this layout has ``pos_embed``. BEiT trained with relative positions
            only (BEiT ``*_pt22k``, BEiT v2 ``*_pt1k``) has none: the model's table is then zero, which is
            what BEiT computes.
    """

    name: str
    prefix: str
    source: str
    carries_final_norm: bool = True
    carries_cls_token: bool = True
    carries_pos_embed: bool = True


def _vitdet(prefix: str, source: str) -> Layout:
    """ViTDet drops the cls token (its position table keeps the row) and has no final norm."""
    return Layout('vitdet', prefix, source, carries_final_norm=False, carries_cls_token=False)


# Layouts in timm names whose backbone prefix also holds a head (MoCo v3: ``base_encoder.head``): only the
# encoder's own roots are taken under the prefix, as for the official MAE layout without a prefix.
_ROOTS_ONLY = ('mocov3', 'dino')
_ENCODER_ROOTS = re.compile(r'^(blocks\.|patch_embed\.|norm\.|cls_token|pos_embed|rel_pos_bias\.)')


def _strip_module(k: str) -> str:
    return k[7:] if k.startswith('module.') else k


def _networks(ckpt: Mapping) -> dict[str, object]:
    """A DINO/iBOT training checkpoint's networks in one dict: ``teacher.*`` and ``student.*`` keys.

    Both are kept so that the report names what is dropped; the other entries (optimizer, args, loss
    state, epoch) are training state, not weights, as in every other training checkpoint.
    """
    return {
        f'{net}.{_strip_module(k)}': v
        for net in ('teacher', 'student')
        if isinstance(ckpt.get(net), Mapping)
        for k, v in ckpt[net].items()
    }


def unwrap(obj: object, where: str) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: ``state_dict``/``model``/``module`` wrappers, ``module.`` prefix;
    a DINO/iBOT training checkpoint's ``teacher``/``student`` networks under those names."""
    sd = obj
    if isinstance(sd, Mapping) and isinstance(sd.get('teacher'), Mapping):
        sd = _networks(sd)
    for _ in range(3):
        if isinstance(sd, Mapping):
            for wrapper in ('state_dict', 'model', 'module'):
                if wrapper in sd and isinstance(sd[wrapper], Mapping):
                    sd = sd[wrapper]
                    break
            else:
                break
    if not isinstance(sd, Mapping) or not sd:
        raise CheckpointError(
            f"{where}: no state dict found (expected a dict of tensors, or one under 'state_dict'/'model')"
        )
    out = {}
    for k, v in sd.items():
        if hasattr(v, '__array__') and not isinstance(v, torch.Tensor):
            v = torch.as_tensor(v)  # detectron2 .pkl files hold numpy arrays
        out[_strip_module(k)] = v
    return out


def detect(sd: Mapping[str, torch.Tensor], where: str) -> Layout:
    """Recognise the layout of a state dict by its keys."""
    keys = list(sd)

    def has(pattern: str) -> str | None:
        rx = re.compile(pattern)
        return next((k for k in keys if rx.search(k)), None)

    if has(r'(^|\.)dist_token$'):
        raise CheckpointError(
            f"{where}: a distilled DeiT checkpoint (dist_token, head_dist); the project's ViT has one cls "
            'token and no distillation token: use the non-distilled DeiT release (deit_base_patch16_224) or '
            'the timm backbone deit_base_distilled_patch16_224'
        )
    if has(r'^backbone\.net\.blocks\.0\.'):
        return _vitdet('backbone.net.', 'detectron2 ViTDet')
    if has(r'^base_encoder\.blocks\.0\.norm1\.'):
        return Layout('mocov3', 'base_encoder.', 'MoCo v3 (base encoder)')
    if has(r'^momentum_encoder\.blocks\.0\.'):
        raise CheckpointError(
            f'{where}: a MoCo v3 checkpoint without its base encoder (no module.base_encoder.* keys, only '
            "momentum_encoder/predictor); the transfer takes the base encoder, as MoCo v3's convert_to_deit.py"
        )
    if has(r'^teacher\.backbone\.blocks\.0\.norm1\.'):
        return Layout('dino', 'teacher.backbone.', 'DINO/iBOT training checkpoint (teacher backbone)')
    for prefix in ('backbone.', ''):
        p = re.escape(prefix)
        if has(rf'^{p}layers\.0\.ln1\.'):
            if prefix and has(r'^neck\.(decoder_embed|mask_token)'):
                src = 'mmpretrain/mmselfsup MAE (encoder + decoder)'
            elif prefix and has(r'^decode_head\.'):
                src = 'mmseg segmentor'
            elif prefix:
                src = 'mmpretrain/mmseg backbone'
            else:
                src = 'mmseg backbone (beit2mmseg)'
            return Layout('mm', prefix, src, carries_final_norm=False)
        if has(rf'^{p}blocks\.0\.attn\.rel_pos_h$'):
            return _vitdet(prefix, 'ViTDet (mmdet/mae-dense detector)' if prefix else 'ViTDet backbone')
        if has(rf'^{p}blocks\.0\.(gamma_1|attn\.q_bias)$') or has(
            rf'^{p}(blocks\.0\.attn\.|rel_pos_bias\.)relative_position_bias_table$'
        ):
            src = 'BEiT/mae-dense seg backbone' if prefix else 'BEiT / timm BEiT'
            return Layout('beit', prefix, src, carries_final_norm=False, carries_pos_embed=False)
        if has(rf'^{p}blocks\.0\.norm1\.'):
            if has(r'^decoder_embed\.') and not prefix:
                src = 'official MAE training checkpoint (encoder + decoder)'
            elif has(rf'^{p}blocks\.0\.ls1\.gamma$'):
                src = 'timm ViT (layer scale)'
            else:
                src = 'official MAE / timm ViT'
            return Layout('mae', prefix, src)
    sample = ', '.join(keys[:6])
    raise CheckpointError(
        f'{where}: unrecognised checkpoint layout (first keys: {sample}); expected official '
        'MAE/timm (blocks.i.norm1), mmseg/mmpretrain (layers.i.ln1), BEiT, ViTDet, MoCo v3 or DINO/iBOT keys'
    )


def _swap(fragment_pairs, key: str, to_canonical: bool) -> str:
    for canon, mm in fragment_pairs:
        src, dst = (mm, canon) if to_canonical else (canon, mm)
        if key == src or key.startswith(src + '.'):
            return dst + key[len(src) :]
    return key


def mm_to_canonical(key: str) -> str:
    """``layers.3.ffn.layers.0.0.weight`` -> ``blocks.3.mlp.fc1.weight``; ``ln1.weight`` -> ``norm.weight``."""
    m = re.match(r'^layers\.(\d+)\.(.*)$', key)
    if m:
        return f'blocks.{m.group(1)}.{_swap(_MM_BLOCK, m.group(2), True)}'
    return _swap(_MM_TOP, key, True)


def canonical_to_mm(key: str) -> str:
    """Inverse of :func:`mm_to_canonical`."""
    m = re.match(r'^blocks\.(\d+)\.(.*)$', key)
    if m:
        return f'layers.{m.group(1)}.{_swap(_MM_BLOCK, m.group(2), False)}'
    return _swap(_MM_TOP, key, False)


def canonical_to_timm(key: str) -> str:
    """The project's names are timm's, except layer scale (``gamma_1`` -> ``ls1.gamma``)."""
    return re.sub(r'\.gamma_([12])$', r'.ls\1.gamma', key)


def split_backbone(
    sd: Mapping[str, torch.Tensor], layout: Layout
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[str]]:
    """Split a state dict into backbone tensors under canonical names and the rest.

    Returns:
        (backbone, others, notes): ``others`` keeps the non-backbone keys as they are (decoder, heads,
        necks); ``notes`` says what was merged or dropped on the way (BEiT q/v bias, duplicates, buffers).
    """
    backbone: dict[str, torch.Tensor] = {}
    others: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    for key, value in sd.items():
        if not key.startswith(layout.prefix):
            others[key] = value
            continue
        local = key[len(layout.prefix) :]
        if _BUFFERS.search(local):
            continue  # recomputed from the grid at run time
        if layout.name == 'mm':
            if layout.prefix == '' and local.startswith('patch_embed.proj.'):
                if 'patch_embed.projection.' + local.split('.')[-1] in sd:
                    continue  # beit2mmseg writes patch_embed twice (old and new name)
            if layout.prefix == '' and not re.match(
                r'^(layers\.|patch_embed\.|ln1\.|norm\.|cls_token|pos_embed)', local
            ):
                others[key] = value  # e.g. beit2mmseg keeps norm/fc_norm/head under timm names
                continue
            local = mm_to_canonical(local)
        elif layout.name in ('mae', 'beit', *_ROOTS_ONLY):
            local = re.sub(r'\.ls([12])\.gamma$', r'.gamma_\1', local)  # timm layer scale
        if (layout.prefix == '' or layout.name in _ROOTS_ONLY) and not _ENCODER_ROOTS.match(local):
            others[key] = value  # decoder_*, mask_token, head, fc_norm, cls_pt_layers: not the encoder
            continue
        backbone[local] = value

    # BEiT: q_bias/v_bias -> one qkv bias with a zero k bias (what BEiT computes).
    for name in [k for k in backbone if k.endswith('.attn.q_bias')]:
        base = name[: -len('q_bias')]
        q, v = backbone.pop(name), backbone.pop(base + 'v_bias')
        backbone[base + 'qkv.bias'] = torch.cat([q, torch.zeros_like(q), v])
        if 'q/v bias merged into qkv.bias' not in notes:
            notes.append('q/v bias merged into qkv.bias')
    # BEiT shared table -> one copy per block.
    shared = backbone.pop('rel_pos_bias.relative_position_bias_table', None)
    if shared is not None:
        depth = 1 + max(int(k.split('.')[1]) for k in backbone if k.startswith('blocks.'))
        for i in range(depth):
            backbone[f'blocks.{i}.attn.relative_position_bias_table'] = shared.clone()
        notes.append('shared relative table copied into every block')
    return backbone, others, notes
