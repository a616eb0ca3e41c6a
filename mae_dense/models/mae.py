"""Masked Autoencoder (He et al., 2021) in plain PyTorch, in the style of the official ``models_mae.py``.

One class whose methods are the algorithm's steps:

1. :meth:`MaskedAutoencoder.random_masking`: a per-sample random permutation of the patches; the first
   ``int(L * (1 - mask_ratio))`` are kept.
2. :meth:`MaskedAutoencoder.forward_encoder`: the ViT (``backbone``) on the visible patches only; the fixed
   sin-cos position embedding is added to every patch *before* masking, so each visible token knows where it
   sits.
3. :meth:`MaskedAutoencoder.forward_decoder`: a small transformer on all ``L`` tokens (the encoded visible
   ones plus one shared, learned mask token per removed patch, put back in the original order).
4. :meth:`MaskedAutoencoder.forward_loss`: per-patch MSE on the (optionally per-patch normalised) pixels,
   averaged over the REMOVED patches only.

The encoder is the project's one ViT (``VisionTransformer(mode='mae')``) under ``backbone.`` so that the
project's checkpoint loader recognises the file; the decoder keeps the official names (``decoder_embed``,
``mask_token``, ``decoder_pos_embed``, ``decoder_blocks``, ``decoder_norm``, ``decoder_pred``).
:meth:`MaskedAutoencoder.load_official` reads both the official layout (encoder keys without a prefix, e.g.
``mae_visualize_vit_large.pth``) and this class's own.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..layers import Block, compile_blocks, get_2d_sincos_pos_embed, init_linear_and_norm, run_block
from ..optim.layer_decay import no_weight_decay_names
from .archs import mae_config
from .vit import VisionTransformer

__all__ = [
    'MaskedAutoencoder',
    'build_mae',
    'mae_vit_base_patch16',
    'mae_vit_large_patch16',
    'mae_vit_huge_patch14',
]

# Top-level names of the official encoder (no prefix in the official files; ``backbone.`` here).


class MaskedAutoencoder(nn.Module):
    """Masked Autoencoder with a ViT encoder (``backbone``) and a light transformer decoder.

    Args:
        img_size: pretraining input size (fixes the position grids).
        patch_size: patch side in pixels.
        in_chans: image channels.
        embed_dim: encoder width.
        depth: encoder blocks.
        num_heads: encoder heads.
        decoder_embed_dim: decoder width (512 in all official models).
        decoder_depth: decoder blocks (8).
        decoder_num_heads: decoder heads (16).
        mlp_ratio: MLP hidden width / width, encoder and decoder.
        norm_pix_loss: regress per-patch normalised pixels (the paper's default recipe).
        mask_ratio: default fraction of patches removed (0.75).
        attn_impl: ``'sdpa'``, ``'eager'`` (explicit softmax; what FLOP counters can see), ``'flex'``
            or ``'auto'``.
        grad_checkpointing: recompute encoder and decoder blocks in backward.
        compile: regional ``torch.compile`` of the encoder and decoder blocks (``True`` or
            ``torch.compile`` arguments; see :func:`~mae_dense.layers.compile_blocks`). Off by default.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        norm_pix_loss: bool = False,
        mask_ratio: float = 0.75,
        attn_impl: str = 'sdpa',
        grad_checkpointing: bool = False,
        compile: bool | dict = False,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f'img_size={img_size} is not a multiple of patch_size={patch_size}')
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f'mask_ratio={mask_ratio}: expected 0 <= mask_ratio < 1')
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.grid = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid[0] * self.grid[1]
        self.norm_pix_loss = norm_pix_loss
        self.mask_ratio = mask_ratio
        self.grad_checkpointing = grad_checkpointing

        # --------------------------------------------------------------------------------------------------
        # MAE encoder: the project's ViT (fixed sin-cos pos embed, cls token, final norm; inits itself).
        self.backbone = VisionTransformer(
            mode='mae',
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            attn_impl=attn_impl,
            grad_checkpointing=grad_checkpointing,
            compile=compile,
        )

        # --------------------------------------------------------------------------------------------------
        # MAE decoder (official names). Fixed sin-cos position embedding: not learned (requires_grad False).
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            torch.zeros(1, self.num_patches + 1, decoder_embed_dim), requires_grad=False
        )
        self.decoder_blocks = nn.ModuleList(
            [
                Block(
                    decoder_embed_dim,
                    decoder_num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=True,
                    norm_layer=norm_layer,
                    attn_impl=attn_impl,
                )
                for _ in range(decoder_depth)
            ]
        )
        compile_blocks(self.decoder_blocks, compile)
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans, bias=True)  # to pixels
        self.initialize_weights()

    # ------------------------------------------------------------------------------------------------ init
    def initialize_weights(self) -> None:
        """Official init of the decoder (the backbone initialises itself the same way)."""
        pe = get_2d_sincos_pos_embed(self.decoder_pos_embed.shape[-1], *self.grid, cls_token=True)
        self.decoder_pos_embed.data.copy_(pe.unsqueeze(0))
        # timm's trunc_normal_(std=.02) is effectively normal_(std=.02) as cutoff is too big (2.)
        nn.init.normal_(self.mask_token, std=0.02)
        init_linear_and_norm(m for name, m in self.named_modules() if not name.startswith('backbone'))

    def no_weight_decay(self) -> set[str]:
        """Names beyond 1-D parameters and biases that the recipe does not decay (timm's convention)."""
        return no_weight_decay_names(self.named_parameters())

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        self.backbone.set_grad_checkpointing(enable)

    # ---------------------------------------------------------------------------------------------- pixels
    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, L, p*p*C), pixels of a patch in (row p, column q, channel c) order."""
        p = self.patch_size
        n, c, hh, ww = imgs.shape
        if hh % p or ww % p:
            raise ValueError(f'image {hh}x{ww} is not a multiple of the patch size {p}')
        h, w = hh // p, ww // p
        x = imgs.reshape(n, c, h, p, w, p)
        x = torch.einsum('nchpwq->nhwpqc', x)
        return x.reshape(n, h * w, p * p * c)

    def unpatchify(self, x: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        """(N, L, p*p*C) -> (N, C, H, W); the inverse of :meth:`patchify` (square grid unless ``hw``)."""
        p = self.patch_size
        n, length, d = x.shape
        c = d // (p * p)
        if hw is None:
            side = int(round(length**0.5))
            if side * side != length:
                raise ValueError(f'{length} patches do not form a square grid; pass hw')
            hw = (side, side)
        h, w = hw
        x = x.reshape(n, h, w, p, p, c)
        x = torch.einsum('nhwpqc->nchpwq', x)
        return x.reshape(n, c, h * p, w * p)

    # --------------------------------------------------------------------------------------------- masking
    def random_masking(
        self,
        batch_size: int,
        length: int,
        mask_ratio: float,
        device: torch.device | str | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample random masking by per-sample shuffling (argsort of uniform noise).

        Args:
            batch_size: N.
            length: L, patches per image.
            mask_ratio: fraction removed; ``int(L * (1 - mask_ratio))`` patches are kept.
            device: where to draw the noise (ignored with ``noise``).
            noise: optional (N, L) noise to fix the permutation (tests, visualisation); U(0, 1) otherwise.

        Returns:
            ids_keep (N, K): kept patch indices, in shuffled order;
            mask (N, L): 0 = kept, 1 = removed, in the ORIGINAL patch order;
            ids_restore (N, L): the inverse permutation (``ids_shuffle[ids_restore] = arange(L)``).
        """
        len_keep = int(length * (1 - mask_ratio))
        if noise is None:
            noise = torch.rand(batch_size, length, device=device)  # noise in [0, 1]
        elif noise.shape != (batch_size, length):
            raise ValueError(f'noise of shape {tuple(noise.shape)}: expected ({batch_size}, {length})')

        # sort noise for each sample: small is keep, large is remove
        ids_shuffle = torch.argsort(noise, dim=1)  # (N, L)
        ids_restore = torch.argsort(ids_shuffle, dim=1)  # (N, L)
        ids_keep = ids_shuffle[:, :len_keep]  # (N, K)

        # binary mask: 0 is keep, 1 is remove; built in shuffled order, then unshuffled
        mask = torch.ones(batch_size, length, device=noise.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, dim=1, index=ids_restore)  # (N, L)
        return ids_keep, mask, ids_restore

    # --------------------------------------------------------------------------------------------- encoder
    def forward_encoder(
        self, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the visible patches only (no mask tokens in the encoder).

        Args:
            imgs: (N, C, H, W).
            mask_ratio: fraction of patches removed.
            noise: optional (N, L) masking noise (see :meth:`random_masking`).

        Returns:
            latent (N, 1+K, C_enc) (cls first), mask (N, L), ids_restore (N, L).
        """
        n, _, hh, ww = imgs.shape
        length = (hh // self.patch_size) * (ww // self.patch_size)
        ids_keep, mask, ids_restore = self.random_masking(n, length, mask_ratio, imgs.device, noise)
        # the ViT embeds every patch, adds the position embedding, THEN keeps ids_keep and prepends cls
        latent = self.backbone.forward_features(imgs, keep_idx=ids_keep)  # (N, 1+K, C_enc)
        return latent, mask, ids_restore

    # --------------------------------------------------------------------------------------------- decoder
    def _run_decoder_block(self, blk: Block, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        return run_block(blk, x, hw, self.grad_checkpointing)

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Reconstruct every patch from the visible latents and mask tokens.

        Args:
            latent: (N, 1+K, C_enc) from :meth:`forward_encoder`.
            ids_restore: (N, L).

        Returns:
            pred (N, L, p*p*C): predicted pixels (normalised per patch with ``norm_pix_loss``).
        """
        x = self.decoder_embed(latent)  # (N, 1+K, D)
        n, _, d = x.shape
        length = ids_restore.shape[1]

        # append mask tokens, then unshuffle so token i is patch i again
        mask_tokens = self.mask_token.expand(n, length + 1 - x.shape[1], d)  # (N, L-K, D)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # (N, L, D), no cls token
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).expand(-1, -1, d))  # unshuffle
        x = torch.cat([x[:, :1, :], x_], dim=1)  # (N, 1+L, D): cls back in front

        # every token, mask tokens included, learns where it is from the fixed position embedding
        if x.shape[1] != self.decoder_pos_embed.shape[1]:
            raise ValueError(
                f'{length} patches, but the decoder position embedding is built for {self.num_patches}'
            )
        x = x + self.decoder_pos_embed

        hw = self._grid_of(length)
        for blk in self.decoder_blocks:
            x = self._run_decoder_block(blk, x, hw)
        x = self.decoder_norm(x)
        x = self.decoder_pred(x)  # (N, 1+L, p*p*C)
        return x[:, 1:, :]  # drop cls: (N, L, p*p*C)

    def _grid_of(self, length: int) -> tuple[int, int]:
        if length == self.num_patches:
            return self.grid
        side = int(round(length**0.5))
        return (side, side)

    # ------------------------------------------------------------------------------------------------ loss
    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error on the removed patches.

        Args:
            imgs: (N, C, H, W).
            pred: (N, L, p*p*C).
            mask: (N, L), 1 = removed.

        Returns:
            scalar: per-patch MSE (mean over p*p*C) averaged over the removed patches only.
        """
        target = self.patchify(imgs)  # (N, L, p*p*C)
        if self.norm_pix_loss:
            # per-patch normalisation; var is torch's default (unbiased), eps 1e-6, as the official code
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5

        loss = (pred - target) ** 2
        loss = loss.mean(dim=-1)  # (N, L), mean loss per patch
        # visible patches are trivially reconstructible: only the removed ones carry the task
        return (loss * mask).sum() / mask.sum()

    def forward(
        self, imgs: torch.Tensor, mask_ratio: float | None = None, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mask, encode, decode, score.

        Args:
            imgs: (N, C, H, W), ImageNet-normalised.
            mask_ratio: fraction removed; ``self.mask_ratio`` when ``None``.
            noise: optional (N, L) masking noise.

        Returns:
            loss (scalar), pred (N, L, p*p*C), mask (N, L).
        """
        mask_ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)  # (N, L, p*p*C)
        loss = self.forward_loss(imgs, pred, mask)
        return loss, pred, mask


# ---------------------------------------------------------------------------------------------- factories
def build_mae(arch: str, **kwargs) -> MaskedAutoencoder:
    """The MAE of a standard size (:data:`mae_dense.models.archs.ARCHS`); ``kwargs`` override its arguments."""
    return MaskedAutoencoder(**mae_config(arch, **kwargs))


# The official models_mae.py names.
mae_vit_base_patch16 = partial(build_mae, 'base')
mae_vit_large_patch16 = partial(build_mae, 'large')
mae_vit_huge_patch14 = partial(build_mae, 'huge')
