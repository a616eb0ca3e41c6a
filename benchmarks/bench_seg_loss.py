"""UperNet's loss step: mmseg's loss_by_feat against the banded upsampled cross-entropy, peak memory and time.

mmseg resizes the head's (B, 150, 128, 128) logits to the (B, 512, 512) label, takes ``CrossEntropyLoss`` and
the pixel accuracy, and backpropagates through the full-resolution logits. ``train_cfg.loss_band_rows``
(``mae_dense.models.seg_loss``) runs the same by bands of label rows. Each implementation runs in its own
process (forward + backward of the loss on random logits, the logits' gradient compared between the two);
the working memory is the peak during the step minus the memory before it (``benchmarks.common.Memory``).

    python benchmarks/bench_seg_loss.py                   # batch 2 (one GPU's share of 8x2), CPU
    python benchmarks/bench_seg_loss.py --batch 16 --device cuda
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Memory, device_name, sync  # noqa: E402


def step(impl: str, logits: torch.Tensor, label: torch.Tensor, rows: int) -> tuple[float, torch.Tensor]:
    logits = logits.detach().requires_grad_(True)
    if impl == 'mmseg':
        from mmseg.models.losses import CrossEntropyLoss, accuracy
        from mmseg.models.utils import resize

        up = resize(logits, size=label.shape[-2:], mode='bilinear', align_corners=False)
        loss = CrossEntropyLoss(loss_weight=1.0)(up, label, ignore_index=255)
        acc = accuracy(up, label, ignore_index=255)
    else:
        from mae_dense.models.seg_loss import upsampled_cross_entropy

        loss_sum, correct, valid = upsampled_cross_entropy(logits, label, 255, False, rows)
        loss = loss_sum / (label.numel() + torch.finfo(torch.float32).eps)
        acc = correct * 100.0 / valid
    loss.backward()
    return float(acc), logits.grad


def run_one(args) -> dict:
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(args.batch, 150, args.size // 4, args.size // 4, generator=gen).to(device)
    label = torch.randint(0, 150, (args.batch, args.size, args.size), generator=gen)
    label[:, : args.size // 8] = 255
    label = label.to(device)
    step(args.impl, logits, label, args.rows)  # warm-up (allocator, kernels)
    memory = Memory(device)
    memory.start()
    sync(device)
    t0 = time.perf_counter()
    acc, grad = step(args.impl, logits, label, args.rows)
    sync(device)
    seconds = time.perf_counter() - t0
    mem = memory.stop()
    torch.save(grad.cpu(), args.grad_out)
    return dict(impl=args.impl, seconds=seconds, acc=acc, **mem)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--size', type=int, default=512)
    parser.add_argument('--rows', type=int, default=64, help='label rows per band')
    parser.add_argument('--json')
    parser.add_argument('--impl', help=argparse.SUPPRESS)
    parser.add_argument('--grad-out', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.impl:
        print(json.dumps(run_one(args)))
        return
    rows, grads = [], {}
    for impl in ('mmseg', 'banded'):
        out = Path(f'/tmp/bench_seg_loss_{impl}.pt')
        cmd = [sys.executable, __file__, '--impl', impl, '--grad-out', str(out)]
        cmd += ['--device', args.device, '--batch', str(args.batch), '--size', str(args.size)]
        cmd += ['--rows', str(args.rows)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        grads[impl] = torch.load(out)
        out.unlink()
    ref, ours = rows
    diff = (grads['banded'] - grads['mmseg']).abs().max().item() / grads['mmseg'].abs().max().item()
    print(
        f'{device_name(torch.device(args.device))}; logits ({args.batch}, 150, {args.size // 4}, '
        f'{args.size // 4}) -> label {args.size}^2; bands of {args.rows} rows'
    )
    print('| impl | working GiB | mem ratio | s | speed-up | acc_seg |')
    print('|---|---|---|---|---|---|')
    for r in rows:
        print(
            f'| {r["impl"]} | {r["work_gib"]:.3f} | {r["work_gib"] / ref["work_gib"]:.2f}x | '
            f'{r["seconds"]:.3f} | {ref["seconds"] / r["seconds"]:.2f}x | {r["acc"]:.4f} |'
        )
    print(f'logits gradient: max difference {diff:.2e} of its largest value')
    if args.json:
        Path(args.json).write_text(json.dumps(dict(rows=rows, grad_rel_diff=diff), indent=1))


if __name__ == '__main__':
    main()
