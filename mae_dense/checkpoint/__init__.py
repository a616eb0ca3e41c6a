"""Checkpoint loading (one policy, one loader) and layout conversion; plain PyTorch."""

from ..errors import CheckpointError
from .convert import convert_file, convert_state_dict
from .layouts import Layout, detect, split_backbone, unwrap
from .load import LoadReport, fit_full_mae, load_backbone, load_full_mae, load_model, read_state_dict
from .safe_load import checkpoint_sha256, file_sha256, is_url, load_file, local_checkpoint, resolve_url

__all__ = [
    'CheckpointError',
    'Layout',
    'LoadReport',
    'checkpoint_sha256',
    'convert_file',
    'convert_state_dict',
    'detect',
    'file_sha256',
    'fit_full_mae',
    'is_url',
    'load_backbone',
    'load_file',
    'load_full_mae',
    'load_model',
    'local_checkpoint',
    'read_state_dict',
    'resolve_url',
    'split_backbone',
    'unwrap',
]
