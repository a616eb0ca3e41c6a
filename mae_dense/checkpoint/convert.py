"""Layout conversion: any recognised checkpoint -> the project's, mmseg's or timm's backbone layout.

All converter tools (``tools/model_converters/*.py``) are thin wrappers over :func:`convert_file`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from .layouts import canonical_to_mm, canonical_to_timm, detect, split_backbone
from .load import read_state_dict

TARGETS = ('project', 'mmseg', 'timm')


def convert_state_dict(
    sd: Mapping[str, torch.Tensor], to: str, where: str = '<state dict>'
) -> dict[str, torch.Tensor]:
    """The backbone of ``sd`` (any recognised layout) in the ``to`` layout.

    ``project``: the project's ViT names (timm names with ``gamma_1``); ``mmseg``: mmseg's MAE/BEiT backbone
    names (what ``beit2mmseg`` writes); ``timm``: timm's VisionTransformer names. Decoder, heads and buffers
    are not part of a backbone and are left out.
    """
    if to not in TARGETS:
        raise ValueError(f'target layout {to!r}: expected one of {TARGETS}')
    layout = detect(sd, where)
    backbone, _, _ = split_backbone(sd, layout)
    rename = {'project': lambda k: k, 'mmseg': canonical_to_mm, 'timm': canonical_to_timm}[to]
    return {rename(k): v for k, v in backbone.items()}


def convert_file(src: str | os.PathLike, dst: str | os.PathLike, to: str) -> dict[str, torch.Tensor]:
    """Read ``src`` (path or https URL, through the loading policy), write the ``to`` layout to ``dst``.

    mmseg and project outputs are saved as ``{'state_dict': ...}``; timm output as ``{'model': ...}`` like
    the official MAE release. ``.safetensors`` destinations are written as flat safetensors files.
    """
    sd, where = read_state_dict(src)
    out = convert_state_dict(sd, to, where)
    dst = Path(dst)
    if dst.parent:
        dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.suffix == '.safetensors':
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in out.items()}, str(dst))
    else:
        torch.save({'model': out} if to == 'timm' else {'state_dict': out}, dst)
    print(f'{where} -> {dst}: {len(out)} backbone tensors in the {to} layout', flush=True)
    return out
