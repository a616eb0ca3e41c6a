"""``mae-dense probe CONFIG --work-dir DIR [--mode fast|augmented] [--cfg-options k=v ...]``.

Trains a frozen-backbone probe (ADE20K linear segmentation, or NYU depth: ``DepthProbeEstimator``) with
mmengine's Runner, evaluates it on the config's test split and
writes ``DIR/probe_result.json``::

    {"metrics": {"mIoU": .., "aAcc": .., "mAcc": ..},   # points (0-100), the best head of the sweep
                                                       # (depth: DepthMetric's rmse, abs_rel, d1, ...)
     "mode": "fast" | "augmented", "lr": <the best head's lr>, "sweep": {"<lr>": mIoU, ...},
     "config": CONFIG, "iterations": N, "pretrained": PATH | null, "checkpoint_sha256": .., ...}

* ``--mode augmented``: the config as it is (features on the fly from freshly augmented crops);
* ``--mode fast`` (default): the config's ``fast_mode`` section is merged first (cached features of fixed
  crops, a learning-rate sweep); the cache is built when its key (checkpoint sha256 + the configs that
  determine the features) is not found under ``probe_cache_root``, and reused otherwise.

``--cfg-options`` apply after the mode, to the configuration that runs. The usual ones:

* ``model.pretrained=PATH`` (any layout the loader knows; ``None``: a random backbone, seeded by
  ``model.backbone.init_seed``); ``randomness.seed=S`` (heads and data order); ``train_cfg.max_iters=N``;
* ``probe_cache_root=DIR`` (fast mode; default ``work_dirs/probe_cache``);
* data roots: ``test_dataloader.dataset.data_root`` and, for training, ``train_dataloader.dataset.data_root``
  (augmented) or ``train_dataloader.dataset.crops.dataset.data_root`` (fast).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..config_files import PROBE_MODES
from ..errors import ConfigError
from .common import add_common_args, load_config, run_tool
from .test import plain

RESULT = 'probe_result.json'
# the segmentors a probe config may build (the ADE20K linear probe; the NYU depth probes)
PROBE_MODELS = ('LinearProbeEncoderDecoder', 'DepthProbeEstimator')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Frozen-backbone probe (ADE20K linear, NYU depth): train, then test.'
    )
    parser.add_argument(
        'config', help='probe config (configs/ade20k/linear-probe_*.py, configs/nyu/*-depth_*.py)'
    )
    parser.add_argument(
        '--mode',
        choices=PROBE_MODES,
        default='fast',
        help='fast: cached features of fixed crops + lr sweep (default); augmented: the protocol as is',
    )
    add_common_args(parser)
    return parser.parse_args(argv)


def load_probe_config(args: argparse.Namespace):
    """The config with the mode applied first and ``--cfg-options`` after it."""
    cfg = load_config(args.config, argparse.Namespace(**dict(vars(args), cfg_options={})))
    if cfg.get('model', {}).get('type') not in PROBE_MODELS or 'fast_mode' not in cfg:
        raise ConfigError(
            f'{args.config}: not a probe config (expected model.type in {PROBE_MODELS} and a fast_mode section)'
        )
    if args.mode == 'fast':
        cfg.merge_from_dict(cfg.fast_mode)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def checkpoint_digest(cfg) -> tuple[str | None, str]:
    """(pretrained source or None, sha256 of its bytes or ``random:<init_seed>``)."""
    from ..checkpoint import checkpoint_sha256

    init_cfg = cfg.model.backbone.get('init_cfg') or {}
    pretrained = (
        cfg.model.get('pretrained') or cfg.model.backbone.get('pretrained') or init_cfg.get('checkpoint')
    )
    if not pretrained:
        return None, f'random:{cfg.model.backbone.get("init_seed", 0)}'
    return str(pretrained), checkpoint_sha256(pretrained, 'model.pretrained')


def cache_spec(cfg, digest: str) -> dict:
    """Everything that determines the cached features; its hash names the cache directory."""
    import torch

    dataset = cfg.train_dataloader.dataset
    amp = cfg.model.get('backbone_amp', True) and torch.cuda.is_available()
    backbone = {k: v for k, v in cfg.model.backbone.to_dict().items() if k not in ('pretrained', 'init_cfg')}
    return dict(
        checkpoint=digest,
        backbone=backbone,
        data_preprocessor=cfg.model.data_preprocessor.to_dict(),
        crops=dataset.crops.to_dict(),
        dtype=dataset.get('dtype', 'float16'),
        backbone_precision='float16' if amp else 'float32',
    )


def summarise(metrics: dict, lr: float | None = None) -> tuple[dict, float, dict]:
    """Runner metrics -> (scores of the best head, its lr, {lr: mIoU} of every head).

    A model with one head and no sweep (the depth probes) reports no ``lr``: ``lr`` is its optimiser's."""
    values = plain(metrics)
    if 'lr' not in values:
        scores = {k: round(float(v), 6) for k, v in values.items()}
        return scores, float(lr), {}
    sweep = {k.split('=', 1)[1]: v for k, v in values.items() if k.startswith('mIoU@lr=')}
    sweep = {k: round(float(v), 4) for k, v in sweep.items()}  # mmseg rounds to 2 decimals, in float32
    scores = {k: round(float(v), 4) for k, v in values.items() if k != 'lr' and '@' not in k}
    return scores, float(values['lr']), sweep


def _seconds_since(start: float) -> float:
    """Wall time since ``start`` (a ``time.perf_counter()``), to the hundredth of a second."""
    return round(time.perf_counter() - start, 2)


def ensure_feature_cache(runner, model, cfg, cache_dir: Path, meta: dict) -> tuple[bool, float]:
    """Build the fast mode's feature cache unless complete: (reused, seconds spent building).

    Rank 0 holds the cache's lock while it decides and while every rank extracts its share, so
    concurrent runs needing the same cache build it once.
    """
    from mmengine.dist import broadcast_object_list, is_main_process

    from ..data.feature_cache import is_complete, locked
    from ..openmmlab.probe import build_feature_cache

    start = time.perf_counter()
    with locked(cache_dir, enabled=is_main_process()):
        reused = [is_complete(cache_dir)]
        broadcast_object_list(reused)  # rank 0 decides for all
        if not reused[0]:
            model.backbone.init_weights()  # the checkpoint (or the seeded random init) before extracting
            loader = cfg.train_dataloader
            loader_cfg = dict(
                batch_size=loader.batch_size,
                num_workers=loader.get('num_workers', 0),
                sampler=dict(type='DefaultSampler', shuffle=False),
                dataset=loader.dataset.crops,
            )
            build_feature_cache(model, loader_cfg, cache_dir, loader.dataset.dtype, meta, runner.seed)
    return reused[0], _seconds_since(start)


def _cache_location(cfg, digest: str, config: str, pretrained: str | None) -> tuple[dict, dict]:
    """Fast mode: (the metadata the cache keeps, its ``{dir, key}``); points the training set at its dir."""
    from ..data.feature_cache import cache_key

    spec = cache_spec(cfg, digest)
    key = cache_key(spec)
    cache_dir = Path(cfg.get('probe_cache_root', 'work_dirs/probe_cache')) / key[:16]
    cfg.train_dataloader.dataset.cache_dir = str(cache_dir)
    return dict(key=key, spec=spec, config=config, pretrained=pretrained), dict(dir=str(cache_dir), key=key)


def _fill_cache(runner, model, cfg, meta: dict, cache: dict) -> dict[str, float]:
    """Fast mode: build the cache unless complete, adding ``reused`` and ``crops`` to ``cache``; returns the
    timing so far (``extract_s`` when it was built)."""
    from ..data.feature_cache import FeatureCache

    cache_dir = Path(cache['dir'])
    cache['reused'], seconds = ensure_feature_cache(runner, model, cfg, cache_dir, meta)
    cache['crops'] = len(FeatureCache(cache_dir))
    return {} if cache['reused'] else {'extract_s': seconds}


def _train_and_test(runner, timing: dict) -> tuple[dict, float, dict]:
    """Train the heads, then score them on the test split (:func:`summarise`); times both in ``timing``."""
    start = time.perf_counter()
    runner.train()
    timing['train_s'] = _seconds_since(start)
    start = time.perf_counter()
    lr = runner.optim_wrapper.param_groups[0].get('initial_lr', runner.optim_wrapper.param_groups[0]['lr'])
    summary = summarise(runner.test(), lr)
    timing['test_s'] = _seconds_since(start)
    return summary


def _result(
    args: argparse.Namespace,
    cfg,
    runner,
    model,
    checkpoint: tuple[str | None, str],
    summary: tuple[dict, float, dict],
    cache: dict | None,
    timing: dict,
) -> dict:
    """The content of ``probe_result.json``; ``checkpoint`` from :func:`checkpoint_digest`, ``summary`` from
    :func:`summarise`."""
    from mmengine.dist import get_world_size

    (pretrained, digest), (scores, lr, sweep) = checkpoint, summary
    head = model.decode_head
    return dict(
        metrics=scores,
        mode=args.mode,
        lr=lr,
        sweep=sweep,
        config=args.config,
        iterations=int(cfg.train_cfg.max_iters),
        pretrained=pretrained,
        checkpoint_sha256=None if pretrained is None else digest,
        layers=list(model.backbone.layers),
        lrs=list(getattr(head, 'lrs', [lr])),
        batch_size=int(cfg.train_dataloader.batch_size) * get_world_size(),
        world_size=get_world_size(),
        seed=runner.seed,
        cache=cache,
        timing=timing,
        work_dir=str(cfg.work_dir),
    )


def _write_result(result: dict) -> None:
    """Write ``probe_result.json`` into the work dir and print the one-line summary."""
    out = Path(result['work_dir']) / RESULT
    out.write_text(json.dumps(result, indent=2))
    scores, mode, lr = result['metrics'], result['mode'], result['lr']
    shown = ('mIoU', 'aAcc') if 'mIoU' in scores else ('rmse', 'abs_rel', 'd1')
    numbers = ', '.join(
        f'{k} {scores[k]:.{2 if k in ("mIoU", "aAcc") else 4}f}' for k in shown if k in scores
    )
    print(f'probe ({mode}): {numbers} at lr {lr:g}; written to {out}', flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def _run() -> int:
        from mmengine.dist import is_main_process

        from ..openmmlab.engine.runner import MAEDenseRunner, unwrap_model

        cfg = load_probe_config(args)
        pretrained, digest = checkpoint_digest(cfg)
        fast = args.mode == 'fast'
        meta, cache = _cache_location(cfg, digest, args.config, pretrained) if fast else (None, None)
        # The probe is scored once, after training, on the test split.
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
        runner = MAEDenseRunner.from_cfg(cfg)  # mmengine's, loaders fitted to the machine
        model = unwrap_model(runner.model)
        timing = _fill_cache(runner, model, cfg, meta, cache) if fast else {}
        summary = _train_and_test(runner, timing)
        if is_main_process():
            _write_result(_result(args, cfg, runner, model, (pretrained, digest), summary, cache, timing))
        return 0

    return run_tool(_run)


if __name__ == '__main__':
    import sys

    sys.exit(main())
