"""Checkpoint loading (one policy, one loader) and layout conversion; plain PyTorch."""

from ..errors import CheckpointError
from .convert import convert_file, convert_state_dict
from .layouts import Layout, detect, split_backbone, unwrap
from .load import LoadReport, load_backbone, load_model, read_state_dict
from .safe_load import file_sha256, is_url, load_file, resolve_url

__all__ = [
    'CheckpointError',
    'Layout',
    'LoadReport',
    'convert_file',
    'convert_state_dict',
    'detect',
    'file_sha256',
    'is_url',
    'load_backbone',
    'load_file',
    'load_model',
    'read_state_dict',
    'resolve_url',
    'split_backbone',
    'unwrap',
]
