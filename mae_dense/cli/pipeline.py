"""``mae-dense pipeline CONFIG``: pretrain (or take a checkpoint) -> ADE20K -> COCO -> report, one command.

A pipeline config (YAML, or Python defining ``pipeline = dict(...)``) names the stages::

    work_dir: work_dirs/pipeline_demo
    seeds: [0]                      # several seeds: the report shows mean ± std
    gpus: 1                         # > 1: every stage through tools/dist_train.sh
    pretrain:
      config: configs/pretrain/mae_vit-tiny-p8_1xb16-amp-coslr-10e_synthetic.py
      # checkpoint: path/to/mae_pretrain_vit_base.pth   (instead of training)
      cfg_options: {train_cfg.max_epochs: 2}
    ade20k:
      config: configs/demo/upernet_vit-tiny_synthetic_ade20k.py
      ms_flip: true                 # also the ms+flip protocol
    coco:
      config: configs/demo/mask-rcnn_vit-tiny_synthetic_coco.py
    report: {title: mae-dense demo}

Each stage runs the project's own tools in a fresh process and writes ``<work_dir>/<stage>/stage.json``
with its outputs and the effective recipe; a stage whose ``stage.json`` says done is skipped, so an
interrupted pipeline resumes where it stopped. A failing stage stops the pipeline with one line and keeps
what finished.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import PipelineError
from .common import ROOT, run_tool

STAGES = ('pretrain', 'ade20k', 'coco')


def load_pipeline_config(path: str | os.PathLike) -> dict:
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
        from mmengine.config import Config

        cfg = Config.fromfile(str(path)).get('pipeline')
        cfg = cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg
    else:
        raise PipelineError(f'{path}: expected a .yaml/.yml or .py pipeline config')
    if not isinstance(cfg, dict):
        raise PipelineError(f'{path}: expected a mapping with work_dir and stages {STAGES}')
    unknown = set(cfg) - {'work_dir', 'seeds', 'gpus', 'report', 'results_dir', *STAGES}
    if unknown:
        raise PipelineError(
            f'{path}: unknown keys {sorted(unknown)}; expected work_dir, seeds, gpus, report, '
            f'results_dir and stages {STAGES}'
        )
    if 'pretrain' in cfg and not ({'config', 'checkpoint'} & set(cfg['pretrain'] or {})):
        raise PipelineError(f'{path}: pretrain needs a config (to train) or a checkpoint (to take)')
    for stage in ('ade20k', 'coco'):
        if stage in cfg and 'config' not in (cfg[stage] or {}):
            raise PipelineError(f'{path}: {stage} needs a config')
    cfg.setdefault('work_dir', f'work_dirs/{path.stem}')
    cfg.setdefault('seeds', [0])
    cfg.setdefault('gpus', 1)
    cfg['_source'] = str(path)
    return cfg


# ------------------------------------------------------------------------------------------ recipe record
def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ('torch', 'mmcv', 'mmengine', 'mmsegmentation', 'mmdet', 'timm', 'mae-dense'):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = 'not installed'
    return out


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or 'unknown'
    except (OSError, subprocess.SubprocessError):
        return 'unknown'


def effective_recipe(config: str, cfg_options: dict, world_size: int, seed: int) -> dict[str, Any]:
    """What a stage really runs: batch, accumulation, scaled lr, length, precision, hash, versions."""
    import torch
    from mmengine.config import Config

    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    batch = cfg.train_dataloader.batch_size
    ow = cfg.optim_wrapper
    accum = ow.get('accumulative_counts', 1)
    eff = batch * accum * world_size
    opt = ow.get('optimizer', {})
    pw = ow.get('paramwise_cfg') or {}
    blr = pw.get('base_lr') if ow.get('constructor') == 'MAEPretrainOptimWrapperConstructor' else None
    lr = blr * eff / 256 if blr else opt.get('lr')
    loop = cfg.train_cfg
    precision = 'fp32'
    if 'Amp' in str(ow.get('type', '')):  # AmpOptimWrapper and its subclasses
        precision = str(ow.get('dtype') or 'float16').replace('torch.', '')
        if not torch.cuda.is_available():
            precision += ' requested; CPU fallback: ' + (
                'bf16 autocast' if 'bfloat16' in precision else 'fp32'
            )
    return dict(
        config=config,
        cfg_options=cfg_options,
        world_size=world_size,
        per_gpu_batch=batch,
        accumulative_counts=accum,
        effective_batch=eff,
        lr=lr,
        blr=blr,
        iterations=loop.get('max_iters'),
        epochs=loop.get('max_epochs'),
        precision=precision,
        seed=seed,
        config_hash=hashlib.sha256(cfg.pretty_text.encode()).hexdigest()[:16],
        git_commit=_git_commit(),
        versions=_versions(),
    )


# ------------------------------------------------------------------------------------------------ stages
class Pipeline:
    def __init__(self, cfg: dict, python: str = sys.executable) -> None:
        self.cfg = cfg
        self.work_dir = Path(cfg['work_dir'])
        self.python = python
        self.gpus = int(cfg.get('gpus', 1))

    def _stage_dir(self, name: str) -> Path:
        return self.work_dir / name

    def _done(self, name: str) -> dict | None:
        f = self._stage_dir(name) / 'stage.json'
        if f.is_file():
            record = json.loads(f.read_text())
            if record.get('status') == 'done':
                return record
        return None

    def _write(self, name: str, record: dict) -> dict:
        d = self._stage_dir(name)
        d.mkdir(parents=True, exist_ok=True)
        (d / 'stage.json').write_text(json.dumps(record, indent=2, default=str))
        return record

    def _run(self, name: str, args: list[str], log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))
        print(f'[pipeline] {name}: {" ".join(args)}', flush=True)
        with log.open('w') as f:
            rc = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, cwd=os.getcwd(), env=env).returncode
        if rc:
            tail = [line for line in log.read_text().splitlines() if line.startswith('error: ')]
            raise self._failed(name, tail[-1][len('error: ') :] if tail else f'exit code {rc}', log)

    def _failed(self, name: str, why: str, log: Path | None = None) -> PipelineError:
        done = [
            s.parent.name for s in sorted(self.work_dir.glob('*/stage.json')) if self._done(s.parent.name)
        ]
        where = f'; log: {log}' if log else ''
        return PipelineError(
            f'stage {name} failed ({why}){where}; finished stages kept: {", ".join(done) or "none"}'
        )

    def _recipe(self, name: str, config: str, options: dict, seed: int) -> dict:
        if not Path(config).is_file():
            raise self._failed(name, f'{config}: config file not found')
        return effective_recipe(config, options, self.gpus, seed)

    def _train_cmd(self, config: str, work: Path, options: dict) -> list[str]:
        opts = [f'{k}={v}' for k, v in options.items()]
        if self.gpus > 1:
            cmd = ['sh', str(ROOT / 'tools/dist_train.sh'), config, str(self.gpus)]
        else:
            cmd = [self.python, str(ROOT / 'tools/train.py'), config]
        return cmd + ['--work-dir', str(work)] + (['--cfg-options', *opts] if opts else [])

    def _test_cmd(self, config: str, ckpt: str, work: Path, options: dict, extra: list[str]) -> list[str]:
        opts = [f'{k}={v}' for k, v in options.items()]
        if self.gpus > 1:
            cmd = ['sh', str(ROOT / 'tools/dist_test.sh'), config, ckpt, str(self.gpus)]
        else:
            cmd = [self.python, str(ROOT / 'tools/test.py'), config, ckpt]
        return cmd + ['--work-dir', str(work), *extra] + (['--cfg-options', *opts] if opts else [])

    @staticmethod
    def _last_checkpoint(work: Path) -> str:
        marker = work / 'last_checkpoint'
        if not marker.is_file():
            raise PipelineError(f'{work}: training wrote no checkpoint (no last_checkpoint file)')
        return marker.read_text().strip()

    @staticmethod
    def _metrics(work: Path) -> dict:
        files = sorted(work.rglob('metrics_*.json'))
        if not files:
            raise PipelineError(f'{work}: the test wrote no metrics file')
        return json.loads(files[-1].read_text())['metrics']

    def pretrain(self) -> str | None:
        spec = self.cfg.get('pretrain')
        if not spec:
            return None
        if (done := self._done('pretrain')) is not None:
            print(f'[pipeline] pretrain: done, skipped ({done["checkpoint"]})', flush=True)
            return done['checkpoint']
        if spec.get('checkpoint'):
            return self._write('pretrain', dict(status='done', checkpoint=spec['checkpoint'], trained=False))[
                'checkpoint'
            ]
        work = self._stage_dir('pretrain')
        seed = self.cfg['seeds'][0]
        options = dict(spec.get('cfg_options') or {}, **{'randomness.seed': seed})
        recipe = self._recipe('pretrain', spec['config'], options, seed)
        t0 = time.time()
        self._run('pretrain', self._train_cmd(spec['config'], work, options), work / 'pipeline_train.log')
        ckpt = self._last_checkpoint(work)
        return self._write(
            'pretrain',
            dict(status='done', checkpoint=ckpt, trained=True, recipe=recipe, seconds=time.time() - t0),
        )['checkpoint']

    def transfer(self, stage: str, pretrained: str | None, seed: int) -> dict | None:
        spec = self.cfg.get(stage)
        if not spec:
            return None
        name = stage if seed == self.cfg['seeds'][0] else f'{stage}_seed{seed}'
        if (done := self._done(name)) is not None:
            print(f'[pipeline] {name}: done, skipped', flush=True)
            return done
        work = self._stage_dir(name)
        options = dict(spec.get('cfg_options') or {}, **{'randomness.seed': seed})
        if pretrained:
            key = 'model.pretrained' if stage == 'ade20k' else 'model.backbone.pretrained'
            options[key] = pretrained
        recipe = self._recipe(name, spec['config'], options, seed)
        t0 = time.time()
        self._run(name, self._train_cmd(spec['config'], work, options), work / 'pipeline_train.log')
        ckpt = self._last_checkpoint(work)
        test_opts = {k: v for k, v in options.items() if 'pretrained' not in k}  # weights come from ckpt
        evals = {'ade20k': ['--eval', 'mIoU'], 'coco': ['--eval', 'bbox', 'segm']}[stage]
        results = {}
        self._run(
            f'{name} test',
            self._test_cmd(spec['config'], ckpt, work / 'test_ss', test_opts, evals),
            work / 'pipeline_test.log',
        )
        results['single_scale'] = self._metrics(work / 'test_ss')
        if stage == 'ade20k' and spec.get('ms_flip', True):
            self._run(
                f'{name} ms+flip test',
                self._test_cmd(spec['config'], ckpt, work / 'test_ms', test_opts, [*evals, '--aug-test']),
                work / 'pipeline_test_ms.log',
            )
            results['ms_flip'] = self._metrics(work / 'test_ms')
        return self._write(
            name,
            dict(
                status='done',
                checkpoint=ckpt,
                pretrained=pretrained,
                seed=seed,
                recipe=recipe,
                results=results,
                seconds=time.time() - t0,
            ),
        )

    def run(self) -> dict:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        pretrained = self.pretrain()
        records: dict[str, list[dict]] = {}
        for stage in ('ade20k', 'coco'):
            for seed in self.cfg['seeds']:
                rec = self.transfer(stage, pretrained, seed)
                if rec:
                    records.setdefault(stage, []).append(rec)
        from .report import write_report

        results_dir = Path(self.cfg.get('results_dir', 'results'))
        out = write_report(
            self.work_dir,
            records,
            results_dir,
            self.cfg.get('report', {}) or {},
            pretrain=self._done('pretrain'),
        )
        print(f'[pipeline] report: {out}', flush=True)
        return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mae-dense pipeline', description=__doc__.splitlines()[0])
    parser.add_argument('config', help='pipeline config (.yaml or .py)')
    parser.add_argument('--work-dir', help='override the pipeline work_dir')
    parser.add_argument('--results-dir', help='where leaderboard.md/json and plots go (default: results)')
    args = parser.parse_args(argv)

    def _run() -> int:
        cfg = load_pipeline_config(args.config)
        if args.work_dir:
            cfg['work_dir'] = args.work_dir
        if args.results_dir:
            cfg['results_dir'] = args.results_dir
        Pipeline(cfg).run()
        return 0

    return run_tool(_run)
