"""``mae-dense pipeline FILE --dry-run``: what a pipeline would do, offline, starting nothing.

It lists every cell (sweep points and the cells that choose among them included), every file it would
download (with the size the pipeline file states, else "unknown offline": sizes cannot be looked up
without a network), the gated files the user must supply, the pre-flight's verdict on each stage's data,
and an estimate of the GPU-hours (:mod:`.estimate`), labelled as an estimate. Nothing is written: no work
dir, no results store, no download.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..checkpoint import is_url
from .backbones import BackboneSpec
from .cell import Cell, Context, PretrainCell, TaskCell
from .estimate import (
    ASSUMPTION,
    BackboneShape,
    backbone_macs,
    gpu_hours,
    project_shape,
    timm_shape,
)
from .preflight import problems
from .recipe import RunConfig
from .runner import pipeline_cells
from .spec import SuiteSpec
from .sweeps import point_label
from .tasks import dotted_get, placement_fit

__all__ = ['dry_run']

IMAGENET_TRAIN_IMAGES = 1_281_167  # an absent pretraining folder is counted as ImageNet-1k's train split


def _downloads(spec: SuiteSpec) -> Iterator[str]:
    """One line per file the pipeline would fetch or needs from the user."""
    for b in spec.backbones:
        if b.gated is not None:
            state = 'present' if Path(b.checkpoint).is_file() else 'missing'
            yield f'{b.name}: gated, no URL: the user supplies {b.checkpoint} ({state}); {b.gated}'
        elif b.kind == 'checkpoint' and is_url(b.checkpoint):
            yield f'{b.name}: {b.checkpoint} ({b.size or "size unknown offline"})'
        elif b.kind == 'checkpoint':
            yield f'{b.name}: local file {b.checkpoint} (nothing to download)'
    for t in spec.tasks:
        if any(b.kind == 'config' for b in spec.backbones):
            src = RunConfig.read(t.config, t.cfg_options).get(t.task.weights_key)
            if isinstance(src, str) and is_url(src):
                yield f"config-default ({t.name}'s {t.task.weights_key}): {src} (size unknown offline)"


def _images(cfg: Any, gpus: int) -> tuple[int, str]:
    """(images a training run passes through, how that was counted)."""
    batch = (dotted_get(cfg, 'train_dataloader.batch_size') or 1) * gpus
    batch *= dotted_get(cfg, 'optim_wrapper.accumulative_counts') or 1
    iters = dotted_get(cfg, 'train_cfg.max_iters')
    if iters:
        return iters * batch, f'{iters} it x batch {batch}'
    epochs = dotted_get(cfg, 'train_cfg.max_epochs') or 1
    root = Path(str(dotted_get(cfg, 'train_dataloader.dataset.data_root') or ''))
    split = root / str(dotted_get(cfg, 'train_dataloader.dataset.split') or 'train')
    if split.is_dir():
        n = sum(1 for p in split.rglob('*') if p.is_file())
        return epochs * n, f'{epochs} ep x {n} images'
    return (
        epochs * IMAGENET_TRAIN_IMAGES,
        f'{epochs} ep x {IMAGENET_TRAIN_IMAGES} images (ImageNet-1k; folder absent)',
    )


def _pretrain_estimate(cell: PretrainCell) -> tuple[float, str]:
    """MAE pretraining: the encoder on the visible patches plus the decoder on all of them."""
    from ..models.archs import mae_config

    spec = cell.backbone.pretrain
    cfg = RunConfig.read(spec.config, spec.cfg_options).cfg
    model = dict(cfg.model)
    dims = {
        **(mae_config(model['arch']) if model.get('arch') else {}),
        **{k: v for k, v in model.items() if v is not None},
    }
    size = int(dims.get('img_size', 224))
    encoder = BackboneShape(int(dims['embed_dim']), int(dims['depth']), int(dims['patch_size']))
    decoder = BackboneShape(
        int(dims['decoder_embed_dim']), int(dims['decoder_depth']), int(dims['patch_size'])
    )
    macs = backbone_macs(encoder, size, size, keep=1 - float(dims.get('mask_ratio', 0.75)))
    macs += (
        backbone_macs(decoder, size, size)
        - (size // encoder.patch_size) ** 2 * 3 * encoder.patch_size**2 * decoder.embed_dim
    )
    images, how = _images(cfg, spec.gpus)
    return gpu_hours(macs, images, train=True), f'{macs / 1e9:.3g} GMAC/image, {how}'


def _input(cfg: Any, cell: TaskCell) -> tuple[int, int]:
    value = dotted_get(cfg, cell.task.task.card.input)
    return tuple(value) if isinstance(value, (list, tuple)) else (int(value), int(value))


def _task_estimate(cell: TaskCell, cache: dict) -> tuple[float, str]:
    """A task cell: its backbone at the task's input size, forward+backward (frozen: forward) per image.
    A sweep point changes only the optimisation, so cells differing by seed or point share one count, and
    the config is read once per (task, size)."""
    b, t = cell.backbone, cell.task
    key = (t.label, b.arch, b.timm, repr(b.timm_kwargs))
    if key in cache:
        return cache[key]
    if (t.label, b.arch) not in cache:
        extra = {'mode': t.mode} if t.task.kind == 'probe' else None
        cache[t.label, b.arch] = RunConfig.read(
            t.config, t.cfg_options, extra, placement_fit(t.task, b.arch)
        ).cfg
    cfg = cache[t.label, b.arch]
    shape = timm_shape(b.timm, b.timm_kwargs) if b.timm else project_shape(dict(cfg.model.backbone))
    macs = backbone_macs(shape, *_input(cfg, cell))
    images, how = _images(cfg, t.gpus)
    if t.task.kind == 'probe' and t.mode == 'fast' and dotted_get(cfg, 'fast_iters'):
        fast, batch = dotted_get(cfg, 'fast_iters'), dotted_get(cfg, 'train_dataloader.batch_size') or 1
        images, how = fast * batch, f'{fast} it x batch {batch}'
    cache[key] = (gpu_hours(macs, images, t.task.kind == 'finetune'), f'{macs / 1e9:.3g} GMAC/image, {how}')
    return cache[key]


def _cell_line(cell: Cell, hours: float, how: str) -> str:
    after = f'; after {", ".join(cell.after)}' if cell.after else ''
    role = ''
    if isinstance(cell, TaskCell) and cell.point:
        role = f' [sweep point {point_label(cell.point)}]'
    elif isinstance(cell, TaskCell) and cell.choose:
        role = (
            f' [best of {len(cell.choose)} on val ({cell.task.task.selection.name}), chosen when it starts]'
        )
    return f'  {cell.key}{role}: {cell.gpus} GPU; ~{hours:.3g} GPU-h (estimate: {how}){after}'


def _backbone_line(b: BackboneSpec) -> str:
    source = f'timm {b.timm}' + (f' {b.timm_kwargs}' if b.timm_kwargs else '') if b.timm else 'project ViT'
    size = b.arch.name if b.arch else "the task configs' size"
    return f'  {b.name}: {b.kind}, {source}, {size}'


def dry_run(spec: SuiteSpec, python: str = 'python') -> list[str]:
    """The dry run's report, one line each (nothing is written, started or downloaded)."""
    ctx = Context.of(spec, python)
    cells = pipeline_cells(spec, ctx)
    cache: dict = {}
    lines = [
        f'[dry-run] {spec.source}: nothing started, written or downloaded',
        f'backbones ({len(spec.backbones)}):',
    ]
    lines += [_backbone_line(b) for b in spec.backbones]
    lines.append(f'cells ({len(cells)}; seeds {spec.seeds}):')
    total = 0.0
    for cell in cells:
        hours, how = (
            _pretrain_estimate(cell) if isinstance(cell, PretrainCell) else _task_estimate(cell, cache)
        )
        total += hours  # GPU-hours: the same however many GPUs share the cell
        lines.append(_cell_line(cell, hours, how))
    downloads = list(_downloads(spec))
    lines.append(f'downloads ({len(downloads)}):')
    lines += [f'  {d}' for d in downloads] or ['  none']
    lines.append('data (the pre-flight a real run does first):')
    lines += [f'  {name}: {problem or "ok"}' for name, problem in problems(spec).items()]
    lines.append(
        f'GPU-hours: ~{total:.0f} in all, an ESTIMATE, not a measurement: {ASSUMPTION}; tests not counted'
    )
    return lines
