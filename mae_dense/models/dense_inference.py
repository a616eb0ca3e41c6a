"""Dense-prediction inference: streamed sliding windows and the multi-scale + flip protocol (plain PyTorch).

mmseg's ``slide_inference`` runs one crop at a time and pads every crop's logits to the full image before
adding them. Here the windows of all images in the batch go through the model in chunks of several crops,
with the same window grid and the same averaging of overlapping logits, and each chunk's logits are added
into the running sum as soon as they are computed: the working memory is one chunk plus the output. The
chunk size follows the crop size and the free memory (:func:`auto_max_batch`). The ms+flip protocol runs
one view (scale, flip) at a time, so that only one view's running sum is alive.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

EncodeFn = Callable[[torch.Tensor], torch.Tensor]  # (n, 3, hc, wc) -> (n, C, hc, wc) logits

# Working memory of one crop in the model, in units of its fp32 logits (C x hc x wc floats): the logits
# themselves plus the decoder's maps and the backbone's activations. UperNet + MAE ViT-B at 512^2 with 150
# classes (logits 157 MB) measured 0.3-0.9 GB per crop on CPU, i.e. 2-6 logits' worth.
CROP_MEMORY_IN_LOGITS = 4


def available_memory(device: torch.device) -> int:
    """Bytes still free: CUDA ``mem_get_info``; CPU: ``MemAvailable`` (Linux), else the free pages."""
    if device.type == 'cuda':
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')


def auto_max_batch(
    cap: int, crop: tuple[int, int], num_classes: int, out_bytes: int, device: torch.device
) -> int:
    """Crops per forward pass: as many as the memory budget holds, at least 1, at most ``cap``.

    A crop is estimated at :data:`CROP_MEMORY_IN_LOGITS` times its fp32 logits. The budget is half the
    free GPU memory on CUDA (the GPU's memory serves speed). On CPU it is a quarter of the available RAM
    but no more than the running sum the chunk feeds (``out_bytes``): there, larger batches gain little
    (1.1-1.5x measured on 2 cores), and this keeps the working memory at or under mmseg's one-crop loop,
    which holds the sum and one full-size padded copy of a crop's logits.
    """
    per_crop = CROP_MEMORY_IN_LOGITS * num_classes * crop[0] * crop[1] * 4
    free = available_memory(device)
    budget = free // 2 if device.type == 'cuda' else min(free // 4, out_bytes)
    return int(max(1, min(cap, budget // per_crop)))


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
    fit_memory: bool = True,
) -> torch.Tensor:
    """Sliding-window logits of a batch, streamed: chunks of crops, each added to the sum when computed.

    Images smaller than the crop are zero-padded (bottom/right, i.e. with the normalised mean colour) so
    that every window has the training size; the padding is cut from the result.

    Args:
        encode: the model on a batch of crops, returning logits at crop resolution.
        inputs: (B, 3, H, W) normalised images.
        num_classes: logit channels.
        crop, stride: window size and step (rows, cols).
        max_batch: most crops per forward pass; fewer when memory is short (:func:`auto_max_batch`).
        fit_memory: ``False``: exactly ``max_batch`` crops per pass, whatever the memory.

    Returns:
        (B, num_classes, H, W) logits, averaged where windows overlap.
    """
    b, _, h, w = inputs.shape
    pad_h, pad_w = max(crop[0] - h, 0), max(crop[1] - w, 0)
    x = F.pad(inputs, (0, pad_w, 0, pad_h)) if pad_h or pad_w else inputs
    hp, wp = x.shape[2:]
    boxes = window_boxes(hp, wp, crop, stride)
    preds = x.new_zeros((b, num_classes, hp, wp))
    count = x.new_zeros((1, 1, hp, wp))
    for y1, y2, x1, x2 in boxes:
        count[:, :, y1:y2, x1:x2] += 1
    chunk = max(1, max_batch)
    if fit_memory:
        chunk = auto_max_batch(chunk, crop, num_classes, preds.numel() * preds.element_size(), x.device)
    crops = [(box, i) for box in boxes for i in range(b)]  # window-major: the order of the sums is mmseg's
    for start in range(0, len(crops), chunk):
        part = crops[start : start + chunk]
        logits = encode(torch.stack([x[i, :, y1:y2, x1:x2] for (y1, y2, x1, x2), i in part]))
        for ((y1, y2, x1, x2), i), logit in zip(part, logits):
            preds[i, :, y1:y2, x1:x2] += logit
        del logits, logit  # before the next chunk's forward (a row view keeps its chunk alive too)
    return preds.div_(count)[:, :, :h, :w]


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
    """Multi-scale (+ flip) softmax scores averaged at the output size (mmseg 0.x's 48.70 protocol).

    One view at a time (each scale, then its flip): only one view's full-size logits are alive, as in
    mmseg 0.x's ``aug_test`` loop.

    Args:
        encode_image: full-image logits at input resolution for a batch (e.g. sliding windows).
        inputs: (1, 3, H, W) normalised image at its original size.
        scale, ratios, min_size: as in mmseg 0.x's ``MultiScaleFlipAug``/``Resize``.
        flip: also the horizontal flip of every scale.
        out_size: where the scores are averaged (the original size by default).

    Returns:
        (1, C, *out_size) mean softmax scores.
    """
    h, w = inputs.shape[2:]
    out_size = tuple(out_size or (h, w))
    total, n = None, 0
    for ratio in ratios:
        size = ms_resize_shape(h, w, scale, ratio, min_size)
        x = F.interpolate(inputs, size=size, mode='bilinear', align_corners=False)
        for flipped in (False, True) if flip else (False,):
            logits = encode_image(x.flip(3) if flipped else x)
            if tuple(logits.shape[2:]) != out_size:
                logits = F.interpolate(logits, size=out_size, mode='bilinear', align_corners=align_corners)
            probs = logits.softmax(dim=1)
            del logits
            if flipped:
                probs = probs.flip(3)
            total = probs if total is None else total.add_(probs)
            del probs
            n += 1
    return total / n
