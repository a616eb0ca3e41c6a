"""The project's one Vision Transformer, in three modes.

* ``'mae'``: the MAE encoder (official MAE/timm): fixed 2-D sin-cos position embedding with a zero cls row,
  cls token, final norm; it can take only the visible patches (``keep_idx``).
* ``'seg'``: mmseg's MAE semantics: learned absolute position embedding including cls, a per-block BEiT
  relative position bias table (zero-initialised), layer scale (``init_values``), stochastic depth,
  NCHW maps at ``out_indices``, no final norm.
* ``'det'``: ViTDet semantics: no cls token; the 224-checkpoint position embedding (cls row kept in the
  parameter, dropped at run time) bicubic-resized to the grid; window attention except in the global
  blocks; decomposed relative position; the last block's map.

Parameter names are the timm/official MAE ones (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``) so that one loader serves all
layouts. Every mode accepts any input size: position tables are resized or indexed at run time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from ..layers import (
    Block,
    PatchEmbed,
    compile_blocks,
    get_2d_sincos_pos_embed,
    init_linear_and_norm,
    resize_abs_pos_embed,
    run_block,
)


def quarter_ends(depth: int) -> tuple[int, ...]:
    """The last block of each quarter: ViTDet's global-attention blocks (B: 2,5,8,11; L: 5,11,17,23)."""
    return tuple((k + 1) * depth // 4 - 1 for k in range(4))


def mmseg_out_indices(depth: int) -> tuple[int, ...]:
    """mmseg's MAE/BEiT outputs for UperNet: blocks 3, 5, 7, 11 of 12; the last block of another depth."""
    return (3, 5, 7, 11) if depth == 12 else (depth - 1,)


@dataclasses.dataclass(frozen=True)
class ModePreset:
    """What a mode decides; any field passed to :class:`VisionTransformer` as a keyword overrides it.

    Attributes:
        cls_token: prepend a learned cls token.
        pos_embed: ``'sincos'`` (fixed 2-D sin-cos, official MAE) or ``'learned'``.
        pos_grid: the grid ``pos_embed`` is stored for: ``'input'`` (``img_size``) or ``'pretrain'``
            (``pretrain_img_size``: ViTDet keeps the 224 checkpoint's table and resizes it at run time).
        rel_pos: ``None``, ``'beit'`` (per-block table + 3 cls rows) or ``'decomposed'`` (ViTDet).
        final_norm: apply ``norm`` to what is returned.
        window_size: > 0: window attention (side in tokens) in every block outside ``global_blocks``.
        global_blocks: blocks with global attention when windows are on: indices, or a function of the
            depth (:func:`quarter_ends`).
        out_indices: blocks whose outputs :meth:`VisionTransformer.forward_intermediates` returns
            (negative: from the end), or a function of the depth (:func:`mmseg_out_indices`).
        output: what ``forward`` returns: ``'tokens'`` (:meth:`~VisionTransformer.forward_features`) or
            ``'maps'`` (:meth:`~VisionTransformer.forward_intermediates`).
    """

    cls_token: bool
    pos_embed: str
    pos_grid: str
    rel_pos: str | None
    final_norm: bool
    window_size: int
    global_blocks: Sequence[int] | Callable[[int], Sequence[int]] | None
    out_indices: Sequence[int] | Callable[[int], Sequence[int]]
    output: str


MODES: dict[str, ModePreset] = {
    # The MAE encoder (official MAE/timm): sin-cos table with a zero cls row, cls token, final norm.
    'mae': ModePreset(
        cls_token=True, pos_embed='sincos', pos_grid='input', rel_pos=None, final_norm=True,
        window_size=0, global_blocks=None, out_indices=(-1,), output='tokens',
    ),
    # mmseg's MAE backbone: learned table with cls, BEiT relative bias per block, maps of 4 blocks.
    'seg': ModePreset(
        cls_token=True, pos_embed='learned', pos_grid='input', rel_pos='beit', final_norm=False,
        window_size=0, global_blocks=None, out_indices=mmseg_out_indices, output='maps',
    ),
    # ViTDet: no cls, the 224 table resized, windows of 14 but in 4 global blocks, the last block's map.
    'det': ModePreset(
        cls_token=False, pos_embed='learned', pos_grid='pretrain', rel_pos='decomposed', final_norm=False,
        window_size=14, global_blocks=quarter_ends, out_indices=(-1,), output='maps',
    ),
}  # fmt: skip
_PRESET_KEYS = tuple(f.name for f in dataclasses.fields(ModePreset))


def mode_preset(mode: str, **overrides: Any) -> ModePreset:
    """``MODES[mode]`` with ``overrides`` (fields of :class:`ModePreset`) replacing its values."""
    if mode not in MODES:
        raise ValueError(f'mode={mode!r}: expected one of {tuple(MODES)}')
    unknown = sorted(set(overrides) - set(_PRESET_KEYS))
    if unknown:
        raise ValueError(f'VisionTransformer: unknown arguments {unknown}; mode options are {_PRESET_KEYS}')
    preset = dataclasses.replace(MODES[mode], **overrides)
    if preset.pos_embed not in ('sincos', 'learned') or preset.pos_grid not in ('input', 'pretrain'):
        raise ValueError(
            f"pos_embed={preset.pos_embed!r}, pos_grid={preset.pos_grid!r}: expected 'sincos'/'learned' "
            "and 'input'/'pretrain'"
        )
    if preset.output not in ('tokens', 'maps'):
        raise ValueError(f"output={preset.output!r}: expected 'tokens' or 'maps'")
    return preset


class VisionTransformer(nn.Module):
    """ViT backbone for MAE pretraining, UperNet segmentation and ViTDet detection.

    Args:
        mode: ``'mae'``, ``'seg'`` or ``'det'``: the preset in :data:`MODES` (cls token, position table,
            relative position, windows, outputs).
        img_size: training input size; fixes the ``'input'`` position grid and the global relative tables.
        patch_size: patch side.
        in_chans: image channels.
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: the transformer.
        drop_path_rate: stochastic depth, linearly increasing over blocks.
        init_values: layer-scale init (seg: 1.0, the MAE value; ``None``: no layer scale).
        pretrain_img_size: the size of a ``'pretrain'`` position grid (224).
        attn_impl: ``'sdpa'``, ``'flex'``, ``'eager'`` or ``'auto'`` (flex on CUDA with a relative bias,
            else sdpa); see :mod:`mae_dense.layers.attention`.
        grad_checkpointing: recompute blocks in backward to save memory.
        compile: regional ``torch.compile`` of the blocks (``True`` or ``torch.compile`` arguments); off by
            default and never required.
        pretrained: checkpoint (path or URL, any layout the loader knows) loaded by :meth:`init_weights`.
        init_cfg: OpenMMLab spelling of the same: ``dict(type='Pretrained', checkpoint=...)``.
        **preset: fields of :class:`ModePreset` that replace the mode's (``out_indices``, ``rel_pos``,
            ``window_size``, ``global_blocks``, ``final_norm``, ...).
    """

    def __init__(
        self,
        mode: str = 'mae',
        img_size: int | Sequence[int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        init_values: float | None = None,
        pretrain_img_size: int = 224,
        attn_impl: str = 'sdpa',
        grad_checkpointing: bool = False,
        compile: bool | dict = False,
        pretrained: str | None = None,
        init_cfg: dict | None = None,
        **preset: Any,
    ) -> None:
        super().__init__()
        self.preset = mode_preset(mode, **preset)
        p = self.preset
        img_hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.mode = mode
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.grad_checkpointing = grad_checkpointing
        if init_cfg is not None:
            if init_cfg.get('type') != 'Pretrained' or 'checkpoint' not in init_cfg or pretrained:
                raise ValueError(
                    f"init_cfg={init_cfg}: expected dict(type='Pretrained', checkpoint=PATH) "
                    'and no pretrained argument'
                )
            pretrained = init_cfg['checkpoint']
        self.pretrained = pretrained
        self.num_prefix = 1 if p.cls_token else 0
        out_indices = tuple(p.out_indices(depth) if callable(p.out_indices) else p.out_indices)
        if any(not -depth <= i < depth for i in out_indices):
            raise ValueError(f'out_indices={out_indices} do not fit depth {depth}')
        self.out_indices = tuple(i % depth for i in out_indices)

        # Position grid stored in pos_embed; attention always sees the input's own token grid.
        side = img_hw if p.pos_grid == 'input' else (pretrain_img_size, pretrain_img_size)
        self.pos_grid = (side[0] // patch_size, side[1] // patch_size)
        token_grid = (img_hw[0] // patch_size, img_hw[1] // patch_size)

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if p.cls_token else None
        # A cls row is stored even without a cls token (ViTDet keeps the checkpoint's layout).
        n_pos = 1 + self.pos_grid[0] * self.pos_grid[1]
        self.pos_embed = nn.Parameter(
            torch.zeros(1, n_pos, embed_dim), requires_grad=p.pos_embed == 'learned'
        )

        gb = p.global_blocks(depth) if callable(p.global_blocks) else p.global_blocks
        global_blocks = set(range(depth)) if gb is None or not p.window_size else {i % depth for i in gb}
        self.global_blocks = tuple(sorted(global_blocks))
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        blocks = []
        for i in range(depth):
            windowed = i not in global_blocks
            blocks.append(
                Block(
                    embed_dim,
                    num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop_path=dpr[i],
                    init_values=init_values,
                    norm_layer=norm_layer,
                    window_size=p.window_size if windowed else 0,
                    rel_pos=p.rel_pos,
                    rel_pos_size=(p.window_size, p.window_size) if windowed else token_grid,
                    cls_token=p.cls_token,
                    attn_impl=attn_impl,
                )
            )
        self.blocks = nn.ModuleList(blocks)
        compile_blocks(self.blocks, compile)
        self.norm = norm_layer(embed_dim) if p.final_norm else nn.Identity()
        self.reset_parameters()

    # ------------------------------------------------------------------ init
    def init_weights(self) -> None:
        """Random init, then ``pretrained`` through the project's loader (strict, reported)."""
        self.reset_parameters()
        if self.pretrained:
            from ..checkpoint.load import load_backbone

            load_backbone(self, self.pretrained)

    def reset_parameters(self) -> None:
        """MAE init: xavier-uniform Linear and flattened patch projection, N(0, .02) cls, LN (1, 0)."""
        if self.preset.pos_embed == 'sincos':
            pe = get_2d_sincos_pos_embed(self.embed_dim, *self.pos_grid, cls_token=True)
            self.pos_embed.data.copy_(pe.unsqueeze(0))
        else:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)
        init_linear_and_norm(self.modules())

    # --------------------------------------------------------------- helpers
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def abs_pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        """(1, num_prefix + h*w, C) position embedding for grid ``hw`` (bicubic-resized when needed)."""
        pe = self.pos_embed
        if not self.num_prefix:
            pe = pe[:, 1:]  # ViTDet: the checkpoint's cls row is not used
        return resize_abs_pos_embed(pe, hw, self.pos_grid, num_prefix=self.num_prefix)

    def embed(
        self, x: torch.Tensor, keep_idx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patches + position (+ cls). ``keep_idx`` (B, K) keeps only those patches (MAE visible set).

        Returns:
            tokens (B, num_prefix + N or K, C) and the patch grid (h, w).
        """
        x, hw = self.patch_embed(x)  # (B, N, C)
        pe = self.abs_pos_embed(hw)
        x = x + pe[:, self.num_prefix :]
        if keep_idx is not None:
            x = torch.gather(x, 1, keep_idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # (B, K, C)
        if self.cls_token is not None:
            cls = (self.cls_token + pe[:, :1]).expand(x.shape[0], -1, -1)
            x = torch.cat([cls, x], dim=1)
        return x, hw

    def _run_block(self, blk: Block, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        return run_block(blk, x, hw, self.grad_checkpointing)

    def _to_map(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x[:, self.num_prefix :]
        return x.transpose(1, 2).reshape(x.shape[0], -1, hw[0], hw[1]).contiguous()  # (B, C, h, w)

    # --------------------------------------------------------------- forward
    def forward_features(self, x: torch.Tensor, keep_idx: torch.Tensor | None = None) -> torch.Tensor:
        """All tokens after the last block (and ``norm`` when ``final_norm``): (B, num_prefix + N, C).

        With ``keep_idx`` the encoder sees only the kept patches (MAE: no mask tokens, 25% of the cost).
        """
        x, hw = self.embed(x, keep_idx)
        if keep_idx is not None and any(b.attn.rel_pos for b in self.blocks):
            raise ValueError(
                'keep_idx (a visible-patch subset) needs rel_pos=None: relative tables index a full grid'
            )
        for blk in self.blocks:
            x = self._run_block(blk, x, hw)
        return self.norm(x)

    def forward_intermediates(self, x: torch.Tensor, norm_all: bool = False) -> tuple[torch.Tensor, ...]:
        """NCHW maps (B, C, H/p, W/p) after each block of ``out_indices``.

        ``norm`` is applied to the last block's map; with ``norm_all`` to every map (the frozen-feature
        protocols: DINOv2's ``get_intermediate_layers(norm=True)``).
        """
        x, hw = self.embed(x)
        outs = []
        for i, blk in enumerate(self.blocks):
            x = self._run_block(blk, x, hw)
            if i in self.out_indices:
                outs.append(self._to_map(self.norm(x) if norm_all or i == self.depth - 1 else x, hw))
        return tuple(outs)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """``output='tokens'``: (B, num_prefix + N, C); ``'maps'``: tuple of NCHW maps at ``out_indices``."""
        if self.preset.output == 'tokens':
            return self.forward_features(x)
        return self.forward_intermediates(x)
