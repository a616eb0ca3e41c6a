"""The backbone entries of a pipeline config: where each leaderboard row's encoder weights come from.

``{name, checkpoint}`` (a file or URL in any layout the loader knows), ``{name, pretrain: {config}}``
(trained here first), ``{name, random: true}``; ``arch:`` another size of the project ViT;
``{name, timm: MODEL_NAME, checkpoint | random, timm_kwargs}`` any ViT family timm builds; ``size:`` the
download's size for ``--dry-run``; ``gated:`` weights behind a licence form (the user supplies the file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint import is_url
from ..errors import PipelineError
from ..models.archs import ARCHS, Arch, arch_by_width
from .entry_checks import check_keys, mapping_of, positive_int, resolve_config

__all__ = ['BackboneSpec', 'PretrainSpec', 'parse_backbones']

_BACKBONE_KEYS = ('name', 'checkpoint', 'pretrain', 'random', 'arch', 'timm', 'timm_kwargs', 'size', 'gated')
_ARCH_KEYS = ('embed_dim', 'depth', 'num_heads', 'patch_size')
_PRETRAIN_KEYS = ('config', 'cfg_options', 'gpus')
_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._+-]*$')


@dataclass(frozen=True)
class PretrainSpec:
    """An MAE pretraining stage whose last checkpoint becomes a backbone."""

    config: str
    cfg_options: dict[str, Any]
    gpus: int


@dataclass(frozen=True)
class BackboneSpec:
    """One row of the leaderboard: where its encoder weights come from.

    ``kind`` is ``'checkpoint'`` (a file or URL in any layout the loader knows), ``'pretrain'`` (trained
    here first), ``'random'`` (from scratch) or ``'config'`` (the task configs' own ``pretrained``: the
    older single-backbone form without ``pretrain:``). ``arch``: its size when it is not the task configs'
    (``arch: large``, or ``{embed_dim, depth, num_heads, patch_size}``); None: the configs' own.
    ``timm``: a timm model name (the architecture comes from timm, the weights from ``checkpoint`` in
    their release layout), ``timm_kwargs``: its extra arguments (sizes timm does not name). ``size``: the
    download's size as the pipeline file states it (None: unknown offline). ``gated``: the weights sit
    behind a licence form: where to ask for them; the user puts the file at ``checkpoint``.
    """

    name: str
    kind: str
    checkpoint: str | None = None
    pretrain: PretrainSpec | None = None
    arch: Arch | None = None
    timm: str | None = None
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    size: str | None = None
    gated: str | None = None


def _pretrain(raw: Any, where: str, gpus: int) -> PretrainSpec:
    raw = mapping_of(raw, where)
    check_keys(where, raw, _PRETRAIN_KEYS)
    if 'config' not in raw:
        raise PipelineError(f'{where}: needs a config (the pretraining config to train)')
    return PretrainSpec(
        config=resolve_config(raw['config'], where),
        cfg_options=mapping_of(raw.get('cfg_options'), f'{where}.cfg_options'),
        gpus=positive_int(raw.get('gpus', gpus), f'{where}.gpus'),
    )


def _checkpoint(value: Any, where: str, gated: str | None = None) -> str:
    """A checkpoint path (resolved) or URL; a gated one may be missing until the pre-flight checks it."""
    if not isinstance(value, str) or not value:
        raise PipelineError(f'{where}: checkpoint must be a path or URL, got {value!r}')
    if gated is not None and is_url(value):
        raise PipelineError(f'{where}: gated weights have no URL: give the local file the user puts there')
    if not is_url(value) and not Path(value).expanduser().is_file() and gated is None:
        raise PipelineError(f'{where}: checkpoint {value}: file not found')
    return value if is_url(value) else str(Path(value).expanduser().resolve())


def _extras(raw: dict, where: str) -> dict[str, Any]:
    """The optional fields of a backbone entry: timm model name and arguments, download size, gating."""
    timm, kwargs = _timm(raw, where)
    gated = raw.get('gated')
    if gated is not None and (not isinstance(gated, str) or raw.get('checkpoint') is None):
        raise PipelineError(
            f'{where}: gated takes a line saying where to ask for the weights, with a checkpoint'
        )
    size = raw.get('size')
    if size is not None and not isinstance(size, (str, int)):
        raise PipelineError(
            f'{where}: size must be a text such as "330 MB" or a number of bytes, got {size!r}'
        )
    return dict(timm=timm, timm_kwargs=kwargs, size=None if size is None else str(size), gated=gated)


def _arch(value: Any, where: str) -> Arch | None:
    """A backbone's ``arch``: a standard size's name or its four numbers (None when not given)."""
    if value is None:
        return None
    if isinstance(value, str):
        if value not in ARCHS:
            raise PipelineError(f'{where}: arch {value!r}: expected one of {", ".join(ARCHS)} or a mapping')
        return ARCHS[value]
    dims = mapping_of(value, f'{where}.arch')
    check_keys(f'{where}.arch', dims, _ARCH_KEYS)
    if set(dims) != set(_ARCH_KEYS):
        raise PipelineError(f'{where}.arch: needs {", ".join(_ARCH_KEYS)}, got {", ".join(dims) or "none"}')
    for key in _ARCH_KEYS:
        positive_int(dims[key], f'{where}.arch.{key}')
    if dims['embed_dim'] % dims['num_heads']:
        raise PipelineError(f'{where}.arch: embed_dim {dims["embed_dim"]} is not a multiple of num_heads')
    known = arch_by_width(dims['embed_dim'])
    short = known.short if known else f'ViT {dims["embed_dim"]}-d'
    return Arch(short, f'{short}/{dims["patch_size"]}', **dims)


def _timm(raw: dict, where: str) -> tuple[str | None, dict[str, Any]]:
    """A backbone's ``timm`` name and ``timm_kwargs``, checked by building the model on the meta device."""
    if raw.get('timm') is None:
        if raw.get('timm_kwargs') is not None:
            raise PipelineError(f'{where}: timm_kwargs needs timm (a timm model name)')
        return None, {}
    name, kwargs = raw['timm'], mapping_of(raw.get('timm_kwargs'), f'{where}.timm_kwargs')
    if raw.get('arch') is not None or raw.get('pretrain') is not None:
        raise PipelineError(f'{where}: timm takes a checkpoint or random: true, not arch or pretrain')
    from ..errors import ConfigError
    from ..models.timm_backbone import timm_arch

    try:
        timm_arch(str(name), kwargs)
    except (ConfigError, ValueError, TypeError, AssertionError) as exc:
        raise PipelineError(
            f'{where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}'
        ) from None
    return str(name), kwargs


def parse_backbones(cfg: dict, src: str, gpus: int) -> list[BackboneSpec]:
    if 'backbones' in cfg and 'pretrain' in cfg:
        raise PipelineError(f'{src}: give either backbones (a list) or pretrain (one backbone), not both')
    if 'pretrain' in cfg:  # the single-backbone form
        raw = mapping_of(cfg['pretrain'], f'{src}: pretrain')
        if 'checkpoint' in raw and 'config' not in raw:
            check_keys(f'{src}: pretrain', raw, ('checkpoint',))
            ckpt = _checkpoint(raw['checkpoint'], f'{src}: pretrain')
            return [BackboneSpec(name=_stem(raw['checkpoint']), kind='checkpoint', checkpoint=ckpt)]
        spec = _pretrain(raw, f'{src}: pretrain', gpus)
        return [BackboneSpec(name=_stem(raw['config']), kind='pretrain', pretrain=spec)]
    if 'backbones' not in cfg:
        return [BackboneSpec(name='config-default', kind='config')]
    entries = cfg['backbones']
    if not isinstance(entries, list) or not entries:
        raise PipelineError(
            f'{src}: backbones must be a non-empty list of {{name, checkpoint|pretrain|random}}'
        )
    out: list[BackboneSpec] = []
    for i, raw in enumerate(entries):
        where = f'{src}: backbones[{i}]'
        raw = mapping_of(raw, where)
        check_keys(where, raw, _BACKBONE_KEYS)
        name = raw.get('name')
        if not isinstance(name, str) or not _NAME.match(name):
            raise PipelineError(f'{where}: name must be letters, digits and ._+- (no spaces), got {name!r}')
        if any(b.name == name for b in out):
            raise PipelineError(f'{where}: name {name!r} is used twice')
        where = f'{src}: backbones[{i}] ({name})'
        given = [k for k in ('checkpoint', 'pretrain', 'random') if raw.get(k) not in (None, False)]
        if len(given) != 1:
            raise PipelineError(
                f'{where}: needs exactly one of checkpoint (path or URL), pretrain (a stage), random: true; '
                f'got {given or "none"}'
            )
        arch = _arch(raw.get('arch'), where)
        extras = _extras(raw, where)
        if given == ['random']:
            if raw['random'] is not True:
                raise PipelineError(f'{where}: random must be true, got {raw["random"]!r}')
            out.append(BackboneSpec(name=name, kind='random', arch=arch, **extras))
        elif given == ['checkpoint']:
            ckpt = _checkpoint(raw['checkpoint'], where, extras['gated'])
            out.append(BackboneSpec(name=name, kind='checkpoint', checkpoint=ckpt, arch=arch, **extras))
        else:
            stage = _pretrain(raw['pretrain'], f'{where}.pretrain', gpus)
            out.append(BackboneSpec(name=name, kind='pretrain', pretrain=stage, arch=arch, **extras))
    return out


def _stem(path: str) -> str:
    """A backbone name from a file name (the single-backbone form has no ``name``)."""
    stem = Path(str(path).split('?')[0]).stem
    return re.sub(r'[^A-Za-z0-9._+-]+', '_', stem) or 'backbone'
