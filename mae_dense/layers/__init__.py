"""Small reusable ViT layers (plain PyTorch)."""

from .attention import Attention
from .block import Block, compile_blocks, init_linear_and_norm, run_block
from .drop_path import DropPath
from .mlp import Mlp
from .patch_embed import PatchEmbed
from .pos_embed import get_2d_sincos_pos_embed, resize_abs_pos_embed
from .rel_pos import (
    beit_relative_position_index,
    decomposed_rel_pos_bias,
    resize_beit_rel_pos_table,
    resize_decomposed_rel_pos,
)
from .window import window_partition, window_unpartition

__all__ = [
    'Attention',
    'Block',
    'compile_blocks',
    'init_linear_and_norm',
    'run_block',
    'DropPath',
    'Mlp',
    'PatchEmbed',
    'get_2d_sincos_pos_embed',
    'resize_abs_pos_embed',
    'beit_relative_position_index',
    'decomposed_rel_pos_bias',
    'resize_beit_rel_pos_table',
    'resize_decomposed_rel_pos',
    'window_partition',
    'window_unpartition',
]
