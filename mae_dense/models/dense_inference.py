"""Dense-prediction inference: batched sliding windows and the multi-scale + flip protocol (plain PyTorch).

mmseg's ``slide_inference`` runs one crop at a time; here every window of every image in the batch (an
image and its flip, in the ms+flip protocol) goes through the model as one batch (in chunks of
``max_batch`` windows), with the same window grid and the same averaging of overlapping logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

EncodeFn = Callable[[torch.Tensor], torch.Tensor]  # (n, 3, hc, wc) -> (n, C, hc, wc) logits


def window_boxes(
    h: int, w: int, crop: tuple[int, int], stride: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    """(y1, y2, x1, x2) of every sliding window, in mmseg's order and with its border rule."""
    (hc, wc), (hs, ws) = crop, stride
    h_grids = max(h - hc + hs - 1, 0) // hs + 1
    w_grids = max(w - wc + ws - 1, 0) // ws + 1
    boxes = []
    for i in range(h_grids):
        for j in range(w_grids):
            y2, x2 = min(i * hs + hc, h), min(j * ws + wc, w)
            boxes.append((max(y2 - hc, 0), y2, max(x2 - wc, 0), x2))  # the last window ends at the border
    return boxes


def slide_logits(
    encode: EncodeFn,
    inputs: torch.Tensor,
    num_classes: int,
    crop: tuple[int, int],
    stride: tuple[int, int],
    max_batch: int = 16,
) -> torch.Tensor:
    """Sliding-window logits of a batch: all windows of all images as batches of ``max_batch`` crops.

    Images smaller than the crop are zero-padded (bottom/right, i.e. with the normalised mean colour) so
    that every window has the training size; the padding is cut from the result.

    Args:
        encode: the model on a batch of crops, returning logits at crop resolution.
        inputs: (B, 3, H, W) normalised images.
        num_classes: logit channels.
        crop, stride: window size and step (rows, cols).
        max_batch: crops per forward pass (memory bound).

    Returns:
        (B, num_classes, H, W) logits, averaged where windows overlap.
    """
    b, _, h, w = inputs.shape
    pad_h, pad_w = max(crop[0] - h, 0), max(crop[1] - w, 0)
    x = F.pad(inputs, (0, pad_w, 0, pad_h)) if pad_h or pad_w else inputs
    hp, wp = x.shape[2:]
    boxes = window_boxes(hp, wp, crop, stride)
    crops = torch.cat([x[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes])  # (nW*B, 3, hc, wc), window-major
    logits = torch.cat([encode(chunk) for chunk in crops.split(max(1, max_batch))])
    preds = x.new_zeros((b, num_classes, hp, wp))
    count = x.new_zeros((b, 1, hp, wp))
    for k, (y1, y2, x1, x2) in enumerate(boxes):
        preds[:, :, y1:y2, x1:x2] += logits[k * b : (k + 1) * b]
        count[:, :, y1:y2, x1:x2] += 1
    return (preds / count)[:, :, :h, :w]


def ms_resize_shape(
    h: int, w: int, scale: Sequence[int], ratio: float, min_size: int | None
) -> tuple[int, int]:
    """Image size at one ratio of mmseg 0.x's ``MultiScaleFlipAug`` + ``Resize(keep_ratio, min_size)``.

    The scale is ``(int(2048 r), int(512 r))``; with ``min_size`` the short side becomes
    ``max(int(512 r), min_size)`` (so the long-edge cap no longer applies) and the image keeps its aspect,
    rounded as ``mmcv.imrescale`` does (``int(x * factor + 0.5)``).
    """
    target = (int(scale[0] * ratio), int(scale[1] * ratio))
    if min_size is not None:
        short = max(min(target), min_size)
        target = (short * h / w, short) if h > w else (short, short * w / h)
    factor = min(max(target) / max(h, w), min(target) / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def ms_flip_probs(
    encode_image: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    scale: Sequence[int] = (2048, 512),
    ratios: Sequence[float] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75),
    min_size: int | None = 512,
    flip: bool = True,
    out_size: tuple[int, int] | None = None,
    align_corners: bool = False,
) -> torch.Tensor:
    """Multi-scale (+ flip) softmax scores averaged at the output size (mmseg 0.x's protocol behind 48.70 mIoU).

    Args:
        encode_image: full-image logits at input resolution for a batch (e.g. sliding windows).
        inputs: (1, 3, H, W) normalised image at its original size.
        scale, ratios, min_size: as in mmseg 0.x's ``MultiScaleFlipAug``/``Resize``.
        flip: also the horizontal flip, run in the same batch as the image.
        out_size: where the scores are averaged (the original size by default).

    Returns:
        (1, C, *out_size) mean softmax scores.
    """
    h, w = inputs.shape[2:]
    out_size = out_size or (h, w)
    total, n = None, 0
    for ratio in ratios:
        size = ms_resize_shape(h, w, scale, ratio, min_size)
        x = F.interpolate(inputs, size=size, mode='bilinear', align_corners=False)
        batch = torch.cat([x, x.flip(3)]) if flip else x  # image and flip: one batch of windows
        logits = F.interpolate(
            encode_image(batch), size=out_size, mode='bilinear', align_corners=align_corners
        )
        probs = logits.softmax(dim=1)
        if flip:
            probs = torch.cat([probs[:1], probs[1:].flip(3)])
        probs = probs.sum(0, keepdim=True)
        total = probs if total is None else total + probs
        n += batch.shape[0]
    return total / n
