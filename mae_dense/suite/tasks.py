"""The table of tasks: everything the suite knows about a benchmark, one entry each.

A task is a column group of the leaderboard: the spec key that asks for it, where a backbone's weights go in
its config, how a cell runs (fine-tune then test, or probe), which test protocols it has, which numbers it
reports (each with its scale to points, its direction and its column position) and which training curves
it keeps. The spec, the cells, the records and the tables read this table and nothing else; adding a
benchmark is one entry here plus its configs (``register_task`` for one defined outside the package).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from ..models.archs import Arch
from .placement import Placement, dotted_get

__all__ = [
    'TASKS',
    'CardKeys',
    'Metric',
    'Placement',
    'Task',
    'TestProtocol',
    'benchmark_order',
    'dotted_get',
    'get_task',
    'metric_rank',
    'placement_fit',
    'register_task',
    'task_of_benchmark',
]


@dataclass(frozen=True)
class Metric:
    """One reported number.

    Args:
        name: its column name (``'mIoU'``, ``'box AP'``).
        step: the cell step whose output holds it (``'test_ss'``, ``'test_ms'``, ``'probe'``).
        key: its key in that output (``'coco/bbox_mAP'``; dots go into nested mappings: ``'metrics.mIoU'``).
        scale: to points (COCO's AP is a fraction: 100).
        higher_is_better: False for errors (depth RMSE); the tables say so.
    """

    name: str
    step: str
    key: str
    scale: float = 1.0
    higher_is_better: bool = True

    def read(self, steps: dict[str, Any]) -> Any:
        """The raw value in a cell's finished steps (None when absent)."""
        return dotted_get(steps.get(self.step), self.key)


@dataclass(frozen=True)
class TestProtocol:
    """One test of a fine-tuned model: a cell step, the test command's extra flags, its name in messages,
    and the spec key that switches it (None: always run; a switch defaults to on)."""

    step: str
    flags: tuple[str, ...] = ()
    what: str = 'test'
    switch: str | None = None
    ms_flip: bool = False  # the protocol card's 'single scale or ms+flip'


@dataclass(frozen=True)
class CardKeys:
    """Where a task's config states what its protocol card records (:mod:`mae_dense.suite.cards`).

    Args:
        head: config keys whose values name the head (joined with '+', e.g. decode head and neck).
        input: the key of the input size (crop or image size).
        layers: the key of the blocks feeding the head (None: the last block only).
        schedule: by probe mode ('' for any other): the keys tried in order for the schedule length
            (``..._iters`` in iterations, ``...epochs`` in epochs).
        train_set: what the cell trained on, read from its config (NYU: the 795 labeled images, or a file
            list such as BTS's ~24k raw-scene split); None: the benchmark's one training set.
    """

    head: tuple[str, ...]
    input: str
    layers: str | None = None
    train_set: Callable[[Any], str] | None = None  # the training data, from the config, where it varies
    schedule: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {'': ('train_cfg.max_iters', 'train_cfg.max_epochs')}
    )


@dataclass(frozen=True)
class Task:
    """One benchmark of the suite.

    Args:
        name: its key in a pipeline spec and in the results store.
        benchmark: its label in the leaderboard.
        kind: ``'finetune'`` (train, then the tests) or ``'probe'`` (the probe command, frozen backbone).
        weights_key: the config key that takes the backbone's weights (``--cfg-options KEY=FILE``).
        metrics: the reported numbers, in column order.
        column: the position of its column group among the benchmarks.
        spec_keys: the keys its spec entry accepts.
        gpus: GPUs per cell; None: the spec's ``gpus`` (or the entry's own).
        eval_flags: the test command's ``--eval`` arguments.
        tests: the test protocols of a fine-tuning task (the first also writes the qualitative outputs).
        curves: validation keys of mmengine's ``scalars.json`` kept as curves: key -> (name, scale).
        qualitative: which panel its predictions feed (``'segmentation'``, ``'detection'``) or None.
        placement: where a backbone of another size goes in its config (None: the config's size only).
        card: where its config states what the protocol card records.
        sweep_keys: the hyper-parameters a spec entry's ``sweep:`` may search, each with the config key it
            sets (``lr`` -> ``optim_wrapper.optimizer.lr``); fine-tuning tasks only.
        data: the config sections whose datasets (and evaluator files) a cell reads: the pre-flight
            checks these before a pipeline starts.
    """

    name: str
    benchmark: str
    kind: str
    weights_key: str
    metrics: tuple[Metric, ...]
    column: int
    spec_keys: tuple[str, ...] = ('config', 'cfg_options', 'gpus')
    gpus: int | None = None
    eval_flags: tuple[str, ...] = ()
    tests: tuple[TestProtocol, ...] = ()
    curves: dict[str, tuple[str, float]] = field(default_factory=dict)
    qualitative: str | None = None
    placement: Placement | None = None
    card: CardKeys = field(
        default_factory=lambda: CardKeys(head=('model.decode_head.type',), input='crop_size')
    )
    sweep_keys: dict[str, str] = field(default_factory=dict)
    data: tuple[str, ...] = (
        'train_dataloader',
        'val_dataloader',
        'test_dataloader',
        'val_evaluator',
        'test_evaluator',
    )

    def __post_init__(self) -> None:
        if self.kind not in ('finetune', 'probe'):
            raise ValueError(f"task {self.name}: kind={self.kind!r}, expected 'finetune' or 'probe'")
        if self.sweep_keys and self.kind != 'finetune':
            raise ValueError(f'task {self.name}: a sweep is for fine-tuning tasks (a probe sweeps its heads)')

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    def metric(self, name: str) -> Metric | None:
        return next((m for m in self.metrics if m.name == name), None)

    def ms_flip(self, metric: str) -> bool:
        """Whether ``metric`` comes from an ms+flip test."""
        found = self.metric(metric)
        return found is not None and any(t.step == found.step and t.ms_flip for t in self.tests)

    @property
    def selection(self) -> Metric:
        """The metric a sweep chooses its best point on: the first (the validation split's, as the shipped
        configs test on the validation split)."""
        return self.metrics[0]


_SS = TestProtocol('test_ss', (), 'single-scale test')
# the fine-tuning recipe's numbers a per-row search varies (the MAE paper searched lr, wd, drop path)
_FINETUNE_SWEEP = {
    'lr': 'optim_wrapper.optimizer.lr',
    'weight_decay': 'optim_wrapper.optimizer.weight_decay',
    'drop_path': 'model.backbone.drop_path_rate',
    'layer_decay': 'optim_wrapper.paramwise_cfg.layer_decay_rate',
}
TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add ``task`` to the table (a new name, or the same entry again)."""
    if TASKS.get(task.name, task) != task:
        raise ValueError(f'task {task.name!r} is already in the table with another definition')
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    return TASKS[name]


def benchmark_order() -> tuple[str, ...]:
    """The benchmark labels in column order."""
    return tuple(t.benchmark for t in sorted(TASKS.values(), key=lambda t: t.column))


def task_of_benchmark(benchmark: str) -> Task | None:
    return next((t for t in TASKS.values() if t.benchmark == benchmark), None)


def placement_fit(
    task: Task, arch: Arch | None, timm: str | None = None, timm_kwargs: dict[str, Any] | None = None
) -> Callable[[Any], dict[str, Any]] | None:
    """What puts ``arch`` (or timm's ``timm`` with ``timm_kwargs``) into ``task``'s config, given that
    config (None: the config's own backbone)."""
    if arch is None and timm is None:
        return None
    if task.placement is None:  # the spec refuses this before anything runs
        raise ValueError(f'task {task.name} cannot place another backbone ({timm or arch.short})')
    if timm is None:
        return partial(task.placement.options, arch)
    from ..models.timm_backbone import timm_arch

    kwargs = dict(timm_kwargs or {})
    return partial(task.placement.timm_options, timm_arch(timm, kwargs), timm, kwargs)


def metric_rank(benchmark: str, metric: str) -> int:
    """The position of ``metric`` among its benchmark's columns (unknown ones last)."""
    task = task_of_benchmark(benchmark)
    names = task.metric_names if task else ()
    return names.index(metric) if metric in names else len(names)


register_task(
    Task(
        name='ade20k',
        benchmark='ADE20K',
        kind='finetune',
        weights_key='model.pretrained',
        metrics=(
            Metric('mIoU', 'test_ss', 'mIoU'),
            Metric('mIoU ms+flip', 'test_ms', 'mIoU'),
            Metric('aAcc', 'test_ss', 'aAcc'),
        ),
        column=0,
        spec_keys=('config', 'cfg_options', 'gpus', 'ms_flip'),
        eval_flags=('--eval', 'mIoU'),
        tests=(_SS, TestProtocol('test_ms', ('--aug-test',), 'ms+flip test', switch='ms_flip', ms_flip=True)),
        curves={'mIoU': ('mIoU', 1.0), 'aAcc': ('aAcc', 1.0)},
        qualitative='segmentation',
        placement=Placement(
            width=(
                'model.backbone.embed_dim',
                'model.neck.embed_dim',
                'model.decode_head.in_channels',
                'model.auxiliary_head.in_channels',
            ),
            outputs='model.backbone.out_indices',
        ),
        card=CardKeys(
            head=('model.decode_head.type', 'model.neck.type'),
            input='crop_size',
            layers='model.backbone.out_indices',
        ),
        sweep_keys=_FINETUNE_SWEEP,
    )
)
register_task(
    Task(
        name='coco',
        benchmark='COCO',
        kind='finetune',
        weights_key='model.backbone.pretrained',
        metrics=(
            Metric('box AP', 'test_ss', 'coco/bbox_mAP', 100.0),
            Metric('mask AP', 'test_ss', 'coco/segm_mAP', 100.0),
        ),
        column=2,
        eval_flags=('--eval', 'bbox', 'segm'),
        tests=(TestProtocol('test_ss', (), 'test'),),
        curves={'coco/bbox_mAP': ('box AP', 100.0), 'coco/segm_mAP': ('mask AP', 100.0)},
        qualitative='detection',
        # the windowed and global blocks follow the depth through the ViT's det-mode preset
        placement=Placement(width=('model.backbone.embed_dim', 'model.neck.in_channels')),
        # SimpleFPN on the last block's map
        card=CardKeys(head=('model.type', 'model.neck.type'), input='image_size'),
        sweep_keys=_FINETUNE_SWEEP,
    )
)
# the frozen-feature probes (ADE20K, NYU depth): their read blocks, the fast mode's own schedule, and no
# validation run (train, then test)
_PROBE_CARD = CardKeys(
    head=('model.decode_head.type',),
    input='crop_size',
    layers='model.backbone.layers',
    schedule={'': ('train_cfg.max_iters',), 'fast': ('fast_iters', 'train_cfg.max_iters')},
)
_PROBE_DATA = ('train_dataloader', 'test_dataloader', 'test_evaluator')


def _nyu_train_set(cfg: Any) -> str:
    """NYU Depth v2's training images: the official labeled set unless a file list (BTS's split) is given."""
    listed = dotted_get(cfg, 'train_dataloader.dataset.file_list') or dotted_get(
        cfg, 'fast_mode.train_dataloader.dataset.crops.dataset.file_list'
    )
    if listed:
        return f"the images of {listed} (e.g. BTS's ~24k raw-scene split, as DINOv2)"
    return 'the 795 images of the official labeled set (DINOv2: ~24k raw-scene images, BTS split)'


register_task(
    Task(
        name='probe',
        benchmark='ADE20K linear probe',
        kind='probe',
        weights_key='model.pretrained',
        metrics=(Metric('mIoU', 'probe', 'metrics.mIoU'), Metric('aAcc', 'probe', 'metrics.aAcc')),
        column=1,
        # module: the probe command's module (default mae_dense.cli.probe), e.g. a site's own variant
        spec_keys=('config', 'cfg_options', 'mode', 'module'),
        gpus=1,  # a frozen-backbone probe fits one GPU
        # no layer decay: the backbone is frozen; its layers (negative indices) count from the last block
        placement=Placement(
            width=('model.backbone.embed_dim',),
            depth=('model.backbone.depth',),
            width_per_output=(('model.decode_head.in_channels', 'model.backbone.layers'),),
            timm_type='MAEDenseFrozenTimmViT',
            timm_carry=('layers', 'init_seed'),
            decay_prefix=None,
        ),
        card=_PROBE_CARD,
        data=_PROBE_DATA,
    )
)
register_task(
    Task(
        name='depth',
        benchmark='NYU Depth v2',
        kind='probe',
        weights_key='model.pretrained',
        metrics=(
            Metric('RMSE', 'probe', 'metrics.rmse', higher_is_better=False),  # metres
            Metric('AbsRel', 'probe', 'metrics.abs_rel', higher_is_better=False),
            Metric('δ1', 'probe', 'metrics.d1', 100.0),  # percent of pixels within 1.25x
        ),
        column=3,
        spec_keys=('config', 'cfg_options', 'mode', 'module'),
        gpus=1,
        # the heads' widths follow the backbone's (DepthProbeEstimator); the read blocks (non-negative)
        # move to the same relative depth
        placement=Placement(
            width=('model.backbone.embed_dim',),
            depth=('model.backbone.depth',),
            outputs='model.backbone.layers',
            timm_type='MAEDenseFrozenTimmViT',
            timm_carry=('init_seed', 'norm', 'cls_token'),
            decay_prefix=None,
        ),
        card=replace(_PROBE_CARD, train_set=_nyu_train_set),
        data=_PROBE_DATA,
    )
)
