"""The pre-flight: before a pipeline starts anything (a pretraining stage included), every dataset that any
stage will read exists and passes its dataset check, and every gated checkpoint file is in place.

A missing ADE20K root used to be found only when its cell started, after a pretraining stage had run for
days. Here each dataset entry of each stage's effective config (train, val, test loaders and evaluators,
nested wrappers included) goes through the same check its dataset class runs when it is built
(:mod:`mae_dense.data.ade20k`, :mod:`mae_dense.data.coco`, :mod:`mae_dense.data.image_folder`); the first
problem is one line naming the stage and the missing path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..data.ade20k import check_ade20k, check_split_dirs
from ..data.coco import check_coco, check_coco_files
from ..data.image_folder import list_image_folder
from ..errors import USER_ERRORS, PipelineError
from .recipe import read_config
from .spec import SuiteSpec

__all__ = ['check_data', 'preflight']

_SECTIONS = ('train_dataloader', 'val_dataloader', 'test_dataloader', 'val_evaluator', 'test_evaluator')


def _ade20k(ds: dict[str, Any]) -> None:
    root = Path(ds.get('data_root') or '')
    if not root.is_dir():
        check_ade20k(root)  # raises its line: the root, and how to make or convert the data
    prefix = ds.get('data_prefix') or {}
    check_split_dirs(
        root / prefix.get('img_path', ''),
        root / prefix.get('seg_map_path', ''),
        check_values=ds.get('check_values', True),
    )


def _coco(ds: dict[str, Any]) -> None:
    root = Path(ds.get('data_root') or '')
    if not root.is_dir():
        check_coco(root)  # raises its line: the root, and how to get the data
    image_dir = (ds.get('data_prefix') or {}).get('img')
    check_coco_files(
        root / ds['ann_file'],
        None if image_dir is None else root / image_dir,
        check_sizes=ds.get('check_sizes', False),
    )


def _image_folder(ds: dict[str, Any]) -> None:
    list_image_folder(Path(ds.get('data_root') or '') / ds.get('split', 'train'))


# the dataset classes whose check the pre-flight runs, by registry name
CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    'CheckedADE20KDataset': _ade20k,
    'CheckedCocoDataset': _coco,
    'MAEImageFolder': _image_folder,
}


def _datasets(node: Any) -> Iterator[dict[str, Any]]:
    """Every dataset entry under ``node`` (a wrapper's inner ``dataset`` too)."""
    if isinstance(node, dict):
        if node.get('type') in CHECKS or ('data_root' in node and 'type' in node):
            yield node
        for value in node.values():
            yield from _datasets(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _datasets(value)


def effective_config(config: str, options: dict[str, Any], mode: str | None = None) -> dict[str, Any]:
    """A stage's config as its command runs it: a probe mode's section (``fast_mode``) merged first, as the
    probe command does, then the options."""
    cfg = read_config(config)
    if mode and f'{mode}_mode' in cfg:
        cfg.merge_from_dict(cfg[f'{mode}_mode'])
    cfg.merge_from_dict(options)
    return cfg.to_dict()


def check_data(
    config: str, options: dict[str, Any], sections: tuple[str, ...] = _SECTIONS, mode: str | None = None
) -> None:
    """Check every dataset and evaluator file in ``sections`` of one stage's effective config; raise the
    first problem."""
    cfg = effective_config(config, options, mode)
    seen: set[str] = set()
    for section in (s for s in sections if s.endswith('_dataloader')):
        for ds in _datasets(cfg.get(section)):
            key = repr(sorted((k, repr(v)) for k, v in ds.items() if k != 'pipeline'))
            if key in seen:
                continue
            seen.add(key)
            check = CHECKS.get(ds.get('type'))
            if check is not None:
                check(ds)
            elif ds.get('data_root') and not Path(ds['data_root']).exists():
                raise PipelineError(f'data root {ds["data_root"]} not found ({section}, {ds.get("type")})')
    for section in (s for s in sections if s.endswith('_evaluator')):
        evaluators = cfg.get(section) or []
        for evaluator in [evaluators] if isinstance(evaluators, dict) else evaluators:
            ann = evaluator.get('ann_file') if isinstance(evaluator, dict) else None
            if ann and not Path(ann).is_file():
                raise PipelineError(f'annotation file {ann} not found ({section})')


def _stages(spec: SuiteSpec) -> Iterator[tuple[str, str, dict[str, Any], tuple[str, ...], str | None]]:
    """(name, config, options, sections read, probe mode) of every stage that reads data: pretraining,
    then the tasks."""
    for b in spec.backbones:
        if b.kind == 'pretrain':
            yield f'{b.name}/pretrain', b.pretrain.config, b.pretrain.cfg_options, ('train_dataloader',), None
    for t in spec.tasks:
        yield t.label, t.config, t.cfg_options, t.task.data, t.mode


def problems(spec: SuiteSpec) -> dict[str, str | None]:
    """Each stage's (and gated checkpoint's) pre-flight result: None when it passes, else its one line."""
    out: dict[str, str | None] = {}
    for name, config, options, sections, mode in _stages(spec):
        try:
            check_data(config, options, sections, mode)
            out[name] = None
        except USER_ERRORS as exc:
            out[name] = str(exc)
    for b in spec.backbones:
        if b.gated is not None:
            missing = not Path(b.checkpoint).is_file()
            out[f'{b.name} weights'] = (
                f'gated weights {b.checkpoint} not found: {b.gated}' if missing else None
            )
    return out


def preflight(spec: SuiteSpec) -> None:
    """Refuse to start the pipeline when any stage's data (or a gated checkpoint) is missing or fails its
    check: one line naming the stage and the path."""
    for name, problem in problems(spec).items():
        if problem is not None:
            raise PipelineError(f'{spec.source}: pre-flight: {name}: {problem}; nothing was started')
