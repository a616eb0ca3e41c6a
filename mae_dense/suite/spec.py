"""Pipeline configs: read one, check every key and file before anything runs, normalise it to one shape.

A pipeline config (YAML, or Python defining ``pipeline = dict(...)``)::

    work_dir: work_dirs/my_suite
    results_dir: results            # leaderboard.md/.json/.html, figures and results.sqlite
    # db: /shared/mae-dense.sqlite  # the results store (default: <results_dir>/results.sqlite)
    seeds: [0, 1, 2]                # every task runs once per seed; the report shows mean ± std
    gpus: 8                         # GPUs per pretraining / fine-tuning cell (probes take one)
    launcher: local                 # or slurm: every cell its own Slurm job (see ``slurm:``, below)
    backbones:
      - {name: mae-800ep, pretrain: {config: configs/pretrain/mae_vit-base-p16_8xb512-amp-coslr-800e_in1k.py}}
      - {name: official, checkpoint: https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth}
      - {name: scratch, random: true}
      - {name: mae-large, checkpoint: https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_large.pth,
         arch: large, size: 1.2 GB}  # another size: each task puts it into its config (its Placement);
                                   # size: the download's size, shown by --dry-run (optional)
      - {name: dinov2-b, timm: vit_base_patch14_reg4_dinov2, checkpoint: FILE_OR_URL}  # any ViT family timm builds
      - {name: dinov3-b, timm: vit_base_patch16_dinov3, checkpoint: ckpt/dinov3_vitb16.pth,
         gated: request access at ...}  # weights behind a licence form: the user supplies the file
    ade20k: {config: configs/ade20k/upernet_mae-base_fp16_8x2_512x512_160k_ade20k.py, ms_flip: true,
             sweep: {lr: [1e-4, 2e-4, 4e-4]}}  # per-row search: each point on the first seed, the best
                                               # (on the task's first metric, on val) on the other seeds
    coco: {config: configs/coco/mask-rcnn_vit-b-mae_lsj-100e_coco.py}
    probe: {config: <an ADE20K linear-probe config>, mode: fast}
    depth: {config: [<lin. 1 config>, <lin. 4 config>], mode: fast}  # several configs: one protocol each
    report: {title: my backbones}

With ``launcher: slurm`` every cell is a Slurm job; its ``slurm:`` keys are in :mod:`~.cluster`.

A single-backbone config may keep the older form: ``pretrain:`` at the top level (a ``config`` to train or a
``checkpoint`` to take) is one backbone; with neither, the task configs' own ``pretrained`` is used.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config_files import PROBE_MODES, config_from_file
from ..errors import PipelineError
from .backbones import BackboneSpec, parse_backbones
from .entry_checks import check_keys, mapping_of, positive_int, resolve_config
from .tasks import TASKS, Task, TestProtocol

LAUNCHERS = ('local', 'slurm')
_TOP_KEYS = (
    'work_dir',
    'results_dir',
    'db',
    'seeds',
    'gpus',
    'launcher',
    'slurm',
    'backbones',
    'pretrain',
    'qualitative',
    'report',
)
_PROBE_MODULE = 'mae_dense.cli.probe'
_SLURM_KEYS = (
    'partition',
    'job_name',
    'gpus_per_node',
    'cpus_per_task',
    'srun_args',
    'time',
    'account',
    'qos',
    'gres',
    'constraint',
    'mem',
    'sbatch',
    'shared_root',
)
_QUALITATIVE_KEYS = ('images',)
_REPORT_KEYS = ('title',)


@dataclass(frozen=True)
class TaskSpec:
    """One column group of the leaderboard: a fine-tuning or probe config run for every backbone and seed.

    ``switches``: the entry's on/off keys of its task's test protocols (``ms_flip``); ``mode`` and
    ``module``: a probe's mode (``fast``/``augmented``) and the module run as ``python -m MODULE``.
    ``sweep``: the per-row search, hyper-parameter -> values (a fine-tuning task's ``sweep_keys``).
    ``variant``: the config's name when the entry lists several configs (``config: [A, B]``: one protocol
    each, e.g. the depth probes lin. 1, lin. 4 and DPT); its cells and work dirs carry it; '' for one config.
    """

    name: str
    config: str
    cfg_options: dict[str, Any]
    gpus: int
    switches: dict[str, bool] = field(default_factory=dict)
    mode: str | None = None
    module: str | None = None
    sweep: dict[str, list] = field(default_factory=dict)
    variant: str = ''

    @property
    def label(self) -> str:
        """The entry in cell keys and work dirs: ``depth`` or ``depth.dpt-depth_mae-base_nyu``."""
        return f'{self.name}.{self.variant}' if self.variant else self.name

    @property
    def task(self) -> Task:
        return TASKS[self.name]

    @property
    def tests(self) -> tuple[TestProtocol, ...]:
        """The test protocols this entry runs (a fine-tuning task's, less those switched off)."""
        return tuple(t for t in self.task.tests if t.switch is None or self.switches.get(t.switch, True))


@dataclass
class SuiteSpec:
    """A checked pipeline config."""

    source: str
    work_dir: Path
    results_dir: Path
    db: Path
    seeds: list[int]
    gpus: int
    launcher: str
    slurm: dict[str, Any]
    backbones: list[BackboneSpec]
    tasks: list[TaskSpec]
    qualitative_images: int = 3
    title: str = 'mae-dense leaderboard'


def read_config_file(path: str | os.PathLike) -> dict:
    """The raw mapping of a pipeline config (.yaml/.yml, or .py defining ``pipeline``)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f'{path}: pipeline config not found')
    if path.suffix in ('.yaml', '.yml'):
        import yaml

        try:
            cfg = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise PipelineError(f'{path}: not valid YAML ({str(exc).splitlines()[0]})') from None
    elif path.suffix == '.py':
        cfg = config_from_file(str(path), PipelineError).get('pipeline')
        cfg = cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg
    else:
        raise PipelineError(f'{path}: expected a .yaml/.yml or .py pipeline config')
    if not isinstance(cfg, dict):
        raise PipelineError(f'{path}: expected a mapping with backbones and tasks {", ".join(TASKS)}')
    return cfg


def _check_placements(backbones: list[BackboneSpec], tasks: list[TaskSpec], src: str) -> None:
    """A backbone of another size needs every task to know where a size goes in its config."""
    sized = next((b for b in backbones if b.arch is not None or b.timm), None)
    unplaced = [t.name for t in tasks if t.task.placement is None]
    if sized is not None and unplaced:
        if sized.timm:
            raise PipelineError(
                f'{src}: backbone {sized.name} has timm {sized.timm}, but task {unplaced[0]} cannot place '
                'another backbone (its table entry has no placement): drop it or give a config of that backbone'
            )
        raise PipelineError(
            f'{src}: backbone {sized.name} has arch {sized.arch.short}, but task {unplaced[0]} cannot place '
            'another size (its table entry has no placement): drop arch or give a config of that size'
        )


def _sweep(task: Task, raw: Any, where: str) -> dict[str, list]:
    """A task entry's ``sweep:``: hyper-parameter -> distinct numbers, each a key of the task's table entry."""
    sweep = mapping_of(raw, where)
    check_keys(where, sweep, task.sweep_keys)
    for key, values in sweep.items():
        if (
            not isinstance(values, list)
            or len(values) < 2
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values)
            or len(set(values)) != len(values)
        ):
            raise PipelineError(
                f'{where}.{key}: expected a list of at least 2 distinct numbers, got {values!r}'
            )
    return sweep


def _configs(value: Any, where: str) -> list[tuple[str, str]]:
    """(path, variant) of an entry's ``config``: one config (variant ''), or a list of several, each its
    own protocol (variant: the config's file name without .py)."""
    if not isinstance(value, list):
        return [(resolve_config(value, where), '')]
    if not value:
        raise PipelineError(f'{where}.config: expected a config or a non-empty list of configs')
    paths = [resolve_config(v, f'{where}.config[{i}]') for i, v in enumerate(value)]
    variants = [Path(p).stem for p in paths]
    if len(set(variants)) < len(variants):
        raise PipelineError(f'{where}.config: two configs of one name ({", ".join(variants)})')
    return list(zip(paths, variants))


def _task(task: Task, raw: Any, src: str, gpus: int) -> list[TaskSpec]:
    """A task's entry: one :class:`TaskSpec` per config it lists."""
    where = f'{src}: {task.name}'
    raw = mapping_of(raw, where)
    check_keys(where, raw, (*task.spec_keys, 'sweep') if task.sweep_keys else task.spec_keys)
    if 'config' not in raw:
        raise PipelineError(f'{where} needs a config')
    mode = module = None
    if task.kind == 'probe':
        mode = raw.get('mode', 'fast')
        if mode not in PROBE_MODES:
            raise PipelineError(f'{where}.mode: expected one of {", ".join(PROBE_MODES)}, got {mode!r}')
        module = raw.get('module', _PROBE_MODULE)
        if not re.match(r'^[A-Za-z_][\w.]*$', str(module)):
            raise PipelineError(f'{where}.module: expected a Python module name, got {module!r}')
    switches = {t.switch: bool(raw.get(t.switch, True)) for t in task.tests if t.switch}
    common = dict(
        name=task.name,
        cfg_options=mapping_of(raw.get('cfg_options'), f'{where}.cfg_options'),
        gpus=task.gpus or positive_int(raw.get('gpus', gpus), f'{where}.gpus'),
        switches=switches,
        mode=mode,
        module=module,
        sweep=_sweep(task, raw.get('sweep'), f'{where}.sweep') if raw.get('sweep') is not None else {},
    )
    return [TaskSpec(config=c, variant=v, **common) for c, v in _configs(raw['config'], where)]


def _check_slurm(slurm: dict, source: str) -> None:
    """The types of the ``slurm:`` keys (what the cluster accepts is checked before submitting)."""
    for key in ('time', 'cpus_per_task'):
        if key in slurm:
            positive_int(slurm[key], f'{source}: slurm.{key}')
    per_node = slurm.get('gpus_per_node', 8)
    if isinstance(per_node, bool) or not isinstance(per_node, int) or per_node < 0:
        raise PipelineError(f'{source}: slurm.gpus_per_node must be an integer >= 0, got {per_node!r}')
    for key in ('partition', 'job_name', 'account', 'qos', 'gres', 'constraint', 'mem', 'shared_root'):
        if key in slurm and not isinstance(slurm[key], (str, int)):
            raise PipelineError(f'{source}: slurm.{key} must be a string, got {slurm[key]!r}')
    mapping_of(slurm.get('sbatch'), f'{source}: slurm.sbatch')


def parse_spec(cfg: dict, source: str) -> SuiteSpec:
    """Check a raw pipeline mapping and normalise it; every error is one line naming the key."""
    check_keys(source, cfg, (*_TOP_KEYS, *TASKS))
    gpus = positive_int(cfg.get('gpus', 1), f'{source}: gpus')
    seeds = cfg.get('seeds', [0])
    seeds = [seeds] if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
    if (
        not isinstance(seeds, list)
        or not seeds
        or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise PipelineError(f'{source}: seeds must be a list of distinct integers, got {seeds!r}')
    launcher = cfg.get('launcher', 'local')
    if launcher not in LAUNCHERS:
        raise PipelineError(f'{source}: launcher must be one of {", ".join(LAUNCHERS)}, got {launcher!r}')
    slurm = mapping_of(cfg.get('slurm'), f'{source}: slurm')
    check_keys(f'{source}: slurm', slurm, _SLURM_KEYS)
    if launcher == 'slurm' and not (slurm.get('partition') or os.environ.get('PARTITION')):
        raise PipelineError(
            f'{source}: launcher slurm needs slurm.partition (or PARTITION in the environment)'
        )
    _check_slurm(slurm, source)
    qualitative = cfg.get('qualitative', {})
    if qualitative is False:
        images = 0
    else:
        qualitative = mapping_of(qualitative, f'{source}: qualitative')
        check_keys(f'{source}: qualitative', qualitative, _QUALITATIVE_KEYS)
        images = qualitative.get('images', 3)
        if isinstance(images, bool) or not isinstance(images, int) or images < 0:
            raise PipelineError(f'{source}: qualitative.images must be an integer >= 0, got {images!r}')
    report = mapping_of(cfg.get('report'), f'{source}: report')
    check_keys(f'{source}: report', report, _REPORT_KEYS)
    tasks = [
        spec
        for name, task in TASKS.items()
        if cfg.get(name) is not None
        for spec in _task(task, cfg[name], source, gpus)
    ]
    backbones = parse_backbones(cfg, source, gpus)
    _check_placements(backbones, tasks, source)
    if not tasks and not any(b.kind == 'pretrain' for b in backbones):
        raise PipelineError(f'{source}: nothing to run: give at least one task ({", ".join(TASKS)})')
    work_dir = Path(cfg.get('work_dir') or f'work_dirs/{Path(source).stem}')
    results_dir = Path(cfg.get('results_dir') or 'results')
    return SuiteSpec(
        source=source,
        work_dir=work_dir,
        results_dir=results_dir,
        db=Path(cfg['db']) if cfg.get('db') else results_dir / 'results.sqlite',
        seeds=list(seeds),
        gpus=gpus,
        launcher=launcher,
        slurm=slurm,
        backbones=backbones,
        tasks=tasks,
        qualitative_images=images,
        title=str(report.get('title', 'mae-dense leaderboard')),
    )


def load_spec(path: str | os.PathLike, **overrides: Any) -> SuiteSpec:
    """Read, override (``work_dir``, ``results_dir``, ``db`` from the command line) and check a config."""
    cfg = read_config_file(path)
    cfg.update({k: str(v) for k, v in overrides.items() if v is not None})
    return parse_spec(cfg, str(path))
