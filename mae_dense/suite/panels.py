"""The suite's figures from its cells' outputs: each backbone's qualitative panel and MAE reconstructions.

Drawn after the cells have run, from what they left in their work dirs, into the results store; a figure
that cannot be drawn is a warning, never a failure of the pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import PipelineError
from .backbones import BackboneSpec
from .figures import detection_rows, panel_png, segmentation_rows
from .outputs import CellState
from .recipe import read_config
from .schedule import one_line_reason
from .spec import SuiteSpec, TaskSpec
from .store import ResultStore
from .tables import UNKNOWN
from .weights import backbone_weights, stage_dir

__all__ = ['draw_figures']


def draw_figures(spec: SuiteSpec, store: ResultStore) -> None:
    """Per backbone: the qualitative panel of its first seed's cells and, after pretraining, MAE
    reconstructions; into the results store."""
    for backbone in spec.backbones:
        for kind, draw in (('qualitative', qualitative_panel), ('reconstruction', reconstructions)):
            try:
                drawn = draw(spec, backbone)
            except Exception as exc:  # a figure never fails a finished pipeline
                print(
                    f'[pipeline] {backbone.name}: warning: no {kind} figure ({one_line_reason(exc)})',
                    flush=True,
                )
                continue
            if drawn is not None:
                png, caption = drawn
                store.add_figure(backbone.name, _identity(spec, backbone), kind, png, caption)


def _identity(spec: SuiteSpec, backbone: BackboneSpec) -> str:
    try:
        return backbone_weights(backbone, spec.work_dir, spec.tasks[0] if spec.tasks else None)[1]
    except PipelineError:
        return f'{UNKNOWN}:{backbone.name}'


def _first_seed_dir(spec: SuiteSpec, backbone: BackboneSpec, task: TaskSpec) -> Path:
    return stage_dir(spec.work_dir, backbone, f'{task.label}-seed{spec.seeds[0]}')


def _test_set(task: TaskSpec) -> tuple[Path, Any]:
    """The test set of a task config: (data root, dataset config)."""
    ds = read_config(task.config, task.cfg_options).test_dataloader.dataset
    return Path(ds.get('data_root') or ''), ds


def qualitative_panel(spec: SuiteSpec, backbone: BackboneSpec) -> tuple[bytes, str] | None:
    """Image | ground truth | prediction rows of the first seed's fine-tuned cells."""
    rows = []
    for task in spec.tasks:
        work = _first_seed_dir(spec, backbone, task)
        kind = task.task.qualitative
        if kind is None or 'qualitative' not in CellState(work).steps:
            continue
        root, ds = _test_set(task)
        if kind == 'segmentation':
            rows += segmentation_rows(
                work / 'qualitative' / 'labels',
                root / ds.data_prefix.img_path,
                root / ds.data_prefix.seg_map_path,
                spec.qualitative_images,
                ds.get('img_suffix', '.jpg'),
            )
        else:
            rows += detection_rows(
                root / ds.ann_file,
                root / ds.data_prefix.img,
                work / 'qualitative' / 'pred',
                spec.qualitative_images,
            )
    if not rows:
        return None
    title = f'{backbone.name}, seed {spec.seeds[0]}'
    return panel_png(rows, title), f'image | ground truth | prediction ({title})'


def _segmentation_images(spec: SuiteSpec, backbone: BackboneSpec) -> list[Path]:
    """The validation images of the backbone's segmentation panel (in the panel's order)."""
    for task in spec.tasks:
        preds = _first_seed_dir(spec, backbone, task) / 'qualitative' / 'labels'
        if task.task.qualitative == 'segmentation' and preds.is_dir():
            root, ds = _test_set(task)
            suffix = ds.get('img_suffix', '.jpg')
            return [root / ds.data_prefix.img_path / (p.stem + suffix) for p in sorted(preds.glob('*.png'))]
    return []


def reconstructions(spec: SuiteSpec, backbone: BackboneSpec) -> tuple[bytes, str] | None:
    """MAE reconstructions by a pretraining stage's final model (the segmentation panel's images if there
    are any, else the first images of the pretraining folder)."""
    if backbone.kind != 'pretrain' or not spec.qualitative_images:
        return None
    state = CellState(stage_dir(spec.work_dir, backbone, 'pretrain'))
    if not state.done:
        return None
    import torch

    from ..data.image_folder import list_image_folder
    from ..models.archs import mae_config
    from ..visualize import COLUMNS, load_image, load_model, reconstruct, to_uint8

    cfg = read_config(backbone.pretrain.config, backbone.pretrain.cfg_options)
    kwargs = {k: v for k, v in cfg.model.items() if k not in ('type', 'arch', 'data_preprocessor')}
    model = load_model(
        state.data['checkpoint'], mae_config(cfg.model.get('arch', 'base'), **kwargs), None, 'cpu'
    )
    images = _segmentation_images(spec, backbone)[: spec.qualitative_images]
    if not images:
        ds = cfg.train_dataloader.dataset
        folder = Path(ds.data_root) / ds.get('split', 'train')
        images = [folder / p for p in list_image_folder(folder)[0][: spec.qualitative_images]]
    gen = torch.Generator().manual_seed(0)  # the same masks every time
    named = []
    for path in images:
        x = load_image(path, model.img_size).unsqueeze(0)  # (1, 3, S, S)
        noise = torch.rand(1, model.num_patches, generator=gen)
        loss, panels = reconstruct(model, x, model.mask_ratio, noise, model.norm_pix_loss)
        named.append(
            (f'{Path(path).name}, loss {loss.item():.3f}', [to_uint8(panels[c][0]) for c in COLUMNS])
        )
    title = f'{backbone.name}: MAE reconstructions, mask ratio {model.mask_ratio:g}'
    return panel_png(named, title, COLUMNS), f'{" | ".join(COLUMNS)} (loss on the removed patches)'
