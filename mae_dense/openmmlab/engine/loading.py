"""Route mmengine's checkpoint loading through :mod:`mae_dense.checkpoint.safe_load`.

Installed when the project's Runner is built (``MAEDenseRunner``, which the tools use and the shipped
configs name), never on import.
"""

from __future__ import annotations

from typing import Any

from mmengine.runner.checkpoint import CheckpointLoader

from ...checkpoint.safe_load import load_file, resolve_url


def load_from_mae_dense_policy(filename: str, map_location: Any = None) -> Any:
    """Local files and http(s) URLs (torch.hub cache) through the project's loading policy."""
    return load_file(filename, map_location=map_location)


def load_from_mae_dense_policy_url(
    filename: str, map_location: Any = None, model_dir: str | None = None, progress: bool = False
) -> Any:
    return load_file(resolve_url(filename, model_dir, progress), map_location=map_location)


def install_loading_policy() -> None:
    """Replace mmengine's local and http(s) schemes from now on (load_checkpoint, _load_checkpoint, resume);
    idempotent."""
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_mae_dense_policy, force=True)
    CheckpointLoader.register_scheme(
        prefixes=('http://', 'https://'), loader=load_from_mae_dense_policy_url, force=True
    )
