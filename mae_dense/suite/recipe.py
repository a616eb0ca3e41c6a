"""What a run really does: effective batch, the lr the built optimizer had, precision, config hash, versions.

The config hash identifies an experiment in the results store, so it leaves out what the store keys on
separately (the seed, the backbone weights) and what does not change a result (the work dir).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config_files import read_config as _read_config
from ..errors import PipelineError
from ..models.archs import ARCHS, arch_by_width
from .tasks import TASKS, dotted_get

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _unhashed() -> set[str]:
    """Options the pipeline sets per cell that the store keys on separately (the seed, every task's weights
    key) or that do not change the experiment (where it is written)."""
    return {'randomness.seed', 'work_dir', *(t.weights_key for t in TASKS.values())}


def versions() -> dict[str, str]:
    """Installed versions of the stack (``'not installed'`` where a package is missing)."""
    import importlib.metadata as md

    out = {}
    for name in ('torch', 'mmcv', 'mmengine', 'mmsegmentation', 'mmdet', 'timm', 'mae-dense'):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = 'not installed'
    return out


def git_commit() -> str:
    """The commit of the checkout the package runs from; ``'unknown'`` for an installed package."""
    try:
        top = subprocess.run(
            ['git', 'rev-parse', '--show-toplevel', 'HEAD'],
            cwd=PACKAGE_DIR,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return 'unknown'
    lines = top.stdout.split()
    # a package installed into a virtualenv that lives inside some other repository is not that commit
    if top.returncode or len(lines) != 2 or Path(lines[0]).resolve() != PACKAGE_DIR.parent:
        return 'unknown'
    return lines[1]


def read_config(config: str, cfg_options: dict[str, Any] | None = None):
    """An mmengine Config with ``cfg_options`` merged; one pipeline error line naming the file."""
    return _read_config(config, cfg_options, PipelineError)


def model_label(cfg) -> str:
    """'ViT-B', 'ViT-L', 'ViT-H' from the encoder width (the one table of sizes), else 'ViT <width>-d (toy)'."""
    model = cfg.get('model', {}) or {}
    backbone = model.get('backbone') or {}
    if backbone.get('model_name'):  # a timm backbone (mae_dense.models.timm_backbone)
        return f'timm {backbone["model_name"]}'
    width = backbone.get('embed_dim') or model.get('embed_dim')
    if width is None and model.get('arch') in ARCHS:
        width = ARCHS[model['arch']].embed_dim
    if width is None:
        return 'ViT'
    arch = arch_by_width(width)
    return arch.short if arch else f'ViT {width}-d (toy)'


@dataclass
class RunConfig:
    """A cell's config, read once: the merged mmengine Config, its hash and what the records say of it.

    ``hash``: 16 hex digits of sha256 over the config merged with the options that define the experiment
    (not the seed, the weights or the work dir, which the store keys on separately or which change no
    result) and ``extra`` (e.g. the probe's mode); ``cfg``: the config with every option merged.
    """

    config: str
    options: dict[str, Any]
    cfg: Any
    hash: str

    @classmethod
    def read(
        cls,
        config: str,
        options: dict[str, Any],
        extra: dict[str, Any] | None = None,
        fit: Callable[[Any], dict[str, Any]] | None = None,
    ) -> RunConfig:
        """Read ``config`` with ``options``; ``fit``: more options computed from that config
        (a backbone's placement, :meth:`~mae_dense.suite.tasks.Placement.options`), merged after the hash:
        the hash names the protocol, the same for a ViT-B and a ViT-L placed into one config."""
        unhashed = _unhashed()
        cfg = read_config(config, {k: v for k, v in options.items() if k not in unhashed})
        text = cfg.pretty_text + json.dumps(extra or {}, sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        rest = {k: v for k, v in options.items() if k in unhashed}
        if fit is not None:
            rest.update(fit(cfg))
        if rest:
            cfg.merge_from_dict(rest)
        return cls(config, {**options, **rest}, cfg, digest)

    @property
    def model(self) -> str:
        return model_label(self.cfg)

    def get(self, dotted: str) -> Any:
        """The value at ``a.b.c`` (None where a level is missing)."""
        return dotted_get(self.cfg, dotted)

    def recipe(self, world_size: int, seed: int, commit: str) -> dict[str, Any]:
        """What the training run is set to do: batch, accumulation, length, precision, hash, versions.

        ``lr`` stays None here: :func:`trained_lr` reads the one the built optimizer had from the run's
        checkpoint (a constructor may derive it from a base lr and the effective batch).
        """
        import torch

        cfg = self.cfg
        loader = cfg.get('train_dataloader') or {}
        batch = loader.get('batch_size')
        ow = cfg.get('optim_wrapper') or {}
        accum = ow.get('accumulative_counts', 1)
        loop = cfg.get('train_cfg') or {}
        precision = 'fp32'
        if 'Amp' in str(ow.get('type', '')):  # AmpOptimWrapper and its subclasses
            precision = str(ow.get('dtype') or 'float16').replace('torch.', '')
            if not torch.cuda.is_available():
                precision += ' requested; CPU fallback: ' + (
                    'bf16 autocast' if 'bfloat16' in precision else 'fp32'
                )
        return dict(
            config=self.config,
            cfg_options=self.options,
            world_size=world_size,
            per_gpu_batch=batch,
            accumulative_counts=accum,
            effective_batch=batch * accum * world_size if batch else None,
            lr=None,
            iterations=loop.get('max_iters'),
            epochs=loop.get('max_epochs'),
            precision=precision,
            seed=seed,
            config_hash=self.hash,
            model=self.model,
            git_commit=commit,
            versions=versions(),
        )


def trained_lr(checkpoint: str | os.PathLike) -> float | None:
    """The base lr of the optimizer a run really built, read from its checkpoint.

    mmengine's schedulers store each group's starting lr as ``initial_lr``; layer-wise decay groups carry
    ``lr_scale``, so ``initial_lr / lr_scale`` is the base lr in every group.
    """
    from ..checkpoint import load_file

    state = load_file(checkpoint)
    groups = (state.get('optimizer') or {}).get('param_groups') if isinstance(state, dict) else None
    if not groups:
        return None
    return max(g.get('initial_lr', g['lr']) / g.get('lr_scale', 1.0) for g in groups)
