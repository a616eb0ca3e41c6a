"""Bilinear upsampling + cross-entropy without the full-resolution logits.

mmseg's decode heads resize their (B, K, h, w) logits to the label's (H, W), then take the cross-entropy and
the pixel accuracy: at UperNet's 512 crops that is B x 150 x 512^2 fp32 logits (157 MB an image), kept for
the backward with a tensor of the same size for their softmax. Here the upsampling is written as two
interpolation matrices, logits_up = A_h @ logits @ A_w^T (the same weights as ``F.interpolate(...,
'bilinear')``), and the loss runs over bands of output rows: forward and backward each hold one band's
logits at a time, and the backward recomputes them (the logits' gradient is softmax - one-hot, per band).

    loss, correct, valid = upsampled_cross_entropy(logits, label, ignore_index=255)
    # == F.cross_entropy(F.interpolate(logits, label.shape[-2:], mode='bilinear'), label,
    #                    ignore_index=255, reduction='sum'), and the count of right and non-ignored pixels
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ['bilinear_matrix', 'upsampled_cross_entropy']


def bilinear_matrix(size_in: int, size_out: int, align_corners: bool, device=None) -> Tensor:
    """(size_out, size_in) fp32 weights of 1-D linear interpolation, as ``F.interpolate`` computes them
    when given a size (the source coordinate of output i is (i + 0.5) * in/out - 0.5, clamped at 0; with
    ``align_corners`` i * (in - 1)/(out - 1))."""
    out = torch.arange(size_out, device=device, dtype=torch.float64)
    if align_corners:
        src = out * ((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0)
    else:
        src = ((out + 0.5) * (size_in / size_out) - 0.5).clamp_min(0)
    lo = src.floor().long().clamp_max(size_in - 1)
    hi = (lo + 1).clamp_max(size_in - 1)
    frac = (src - lo).to(torch.float32)
    weights = torch.zeros(size_out, size_in, device=device)
    rows = torch.arange(size_out, device=device)
    weights.index_put_((rows, lo), 1 - frac, accumulate=True)
    weights.index_put_((rows, hi), frac, accumulate=True)
    return weights


class _UpsampledCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of the upsampled logits, by bands of ``rows`` output rows."""

    @staticmethod
    def forward(ctx, logits: Tensor, label: Tensor, ignore_index: int, align_corners: bool, rows: int):
        b, k, h, w = logits.shape
        height, width = label.shape[-2:]
        a_h = bilinear_matrix(h, height, align_corners, logits.device)  # (H, h)
        a_w = bilinear_matrix(w, width, align_corners, logits.device)  # (W, w)
        across = logits.float() @ a_w.T  # (B, K, h, W): interpolated along the width once
        valid = label != ignore_index
        loss = logits.new_zeros((), dtype=torch.float32)
        correct = torch.zeros((), dtype=torch.long, device=logits.device)
        for r0 in range(0, height, rows):
            band = torch.einsum('rh,bkhw->bkrw', a_h[r0 : r0 + rows], across)  # (B, K, rows, W)
            lab, ok = label[:, r0 : r0 + rows], valid[:, r0 : r0 + rows]
            picked = band.gather(1, lab.clamp(0, k - 1).unsqueeze(1)).squeeze(1)
            loss += ((band.logsumexp(1) - picked) * ok).sum()
            correct += ((band.argmax(1) == lab) & ok).sum()
        ctx.save_for_backward(logits, label, a_h, a_w)
        ctx.ignore_index, ctx.rows = ignore_index, rows
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_correct):
        logits, label, a_h, a_w = ctx.saved_tensors
        k = logits.shape[1]
        across = logits.float() @ a_w.T
        grad_across = torch.zeros_like(across)
        for r0 in range(0, label.shape[-2], ctx.rows):
            band = torch.einsum('rh,bkhw->bkrw', a_h[r0 : r0 + ctx.rows], across)
            lab = label[:, r0 : r0 + ctx.rows]
            ok = (lab != ctx.ignore_index).unsqueeze(1)
            grad = band.softmax(1)  # d(logsumexp - picked)/d band = softmax - one-hot, on valid pixels
            grad.scatter_add_(1, lab.clamp(0, k - 1).unsqueeze(1), -torch.ones_like(grad[:, :1]))
            grad = grad * ok * grad_loss
            grad_across += torch.einsum('rh,bkrw->bkhw', a_h[r0 : r0 + ctx.rows], grad)
        return (grad_across @ a_w).to(logits.dtype), None, None, None, None


def upsampled_cross_entropy(
    logits: Tensor, label: Tensor, ignore_index: int = 255, align_corners: bool = False, rows: int = 64
) -> tuple[Tensor, Tensor, Tensor]:
    """Cross-entropy of ``logits`` (B, K, h, w) bilinearly upsampled to ``label`` (B, H, W), in fp32.

    Returns:
        ``(loss_sum, correct, valid)``: the summed cross-entropy over the non-ignored pixels
        (differentiable with respect to ``logits``), the number of those pixels whose arg-max class is the
        label, and the number of non-ignored pixels.
    """
    if label.dim() == 4:
        label = label.squeeze(1)
    loss, correct = _UpsampledCrossEntropy.apply(logits, label, ignore_index, align_corners, rows)
    return loss, correct, (label != ignore_index).sum()
