"""The standard ViT sizes, in one table.

The MAE factories, the pretraining model (``MAEPretrainer(arch=...)``), the FLOP counter, the reconstruction
tool and the report all read :data:`ARCHS`; a model of another size is built by passing its dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ['ARCHS', 'MAE_DECODER', 'Arch', 'arch_by_width', 'get_arch', 'mae_config']


@dataclass(frozen=True)
class Arch:
    """One ViT size: its short and long name and the encoder's dimensions."""

    short: str  # 'ViT-B'
    name: str  # 'ViT-B/16'
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int

    def vit_kwargs(self) -> dict[str, int]:
        """Keyword arguments of :class:`~mae_dense.models.vit.VisionTransformer` for this size."""
        return dict(
            patch_size=self.patch_size, embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads
        )


ARCHS: dict[str, Arch] = {
    'base': Arch('ViT-B', 'ViT-B/16', patch_size=16, embed_dim=768, depth=12, num_heads=12),
    'large': Arch('ViT-L', 'ViT-L/16', patch_size=16, embed_dim=1024, depth=24, num_heads=16),
    'huge': Arch('ViT-H', 'ViT-H/14', patch_size=14, embed_dim=1280, depth=32, num_heads=16),
}

# The decoder of every released MAE (official models_mae.py): 512-d, 8 blocks, 16 heads, MLP ratio 4.
MAE_DECODER: dict[str, float] = dict(
    decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, mlp_ratio=4.0
)


def get_arch(name: str) -> Arch:
    """The size called ``name`` (``'base'``, ``'large'``, ``'huge'``)."""
    if name not in ARCHS:
        raise ValueError(f'arch={name!r}: expected one of {tuple(ARCHS)}')
    return ARCHS[name]


def mae_config(arch: str | None = None, **overrides: Any) -> dict:
    """Constructor arguments of :class:`~mae_dense.models.mae.MaskedAutoencoder`: the standard size ``arch``'s
    (none when ``arch`` is None or empty: a model of another size given by ``overrides``), with ``overrides``
    over them (a new dict)."""
    return {**({**MAE_DECODER, **get_arch(arch).vit_kwargs()} if arch else {}), **overrides}


def arch_by_width(embed_dim: int) -> Arch | None:
    """The standard size with this width, if any (the report names runs by it)."""
    return next((a for a in ARCHS.values() if a.embed_dim == embed_dim), None)
