"""MAE pretraining input pipeline, images/s: JPEG decoding, RandomResizedCrop + flip, collation, copy to the
device and normalisation there (``MAEImageFolder`` + ``MAEDataPreprocessor``, as the pretraining configs).

The images are real JPEGs written once into a temporary folder (ImageNet-like 500x375, smooth content
with a little noise). One GPU at ViT-L batch 128 consumes about 1,770 img/s (``bench_pretrain.py``), so a
loader with W workers must reach that: the per-worker rate printed here, times the workers a machine
gives each GPU, says whether it does.

    python benchmarks/bench_loader.py --workers 0 1 2                  # CPU, this machine
    python benchmarks/bench_loader.py --device cuda --workers 4 8 16   # the GPU machine, 16 cores
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import device_name, dump, sync  # noqa: E402


def write_jpegs(root: Path, count: int, size: tuple[int, int] = (375, 500), seed: int = 0) -> None:
    """``count`` JPEGs (quality 90) of ``size`` (H, W) under ``root/train/class_000``."""
    folder = root / 'train' / 'class_000'
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    for i in range(count):
        f = rng.uniform(1, 6, (3, 2))
        img = np.stack([np.sin(2 * np.pi * (fy * yy + fx * xx) + rng.uniform(0, 6)) for fy, fx in f], -1)
        img = (img * 0.4 + 0.5 + rng.normal(0, 0.03, img.shape)).clip(0, 1)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f'{i:05d}.jpg', quality=90)


def rate(dataset, preprocess, device, workers: int, batch: int, batches: int) -> float:
    """Images/s over ``batches`` batches, after one warm-up batch (worker start-up excluded)."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == 'cuda',
        drop_last=True,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )
    it = iter(loader)
    preprocess(next(it))
    sync(device)
    t0 = time.perf_counter()
    for _ in range(batches):
        preprocess(next(it))
    sync(device)
    return batches * batch / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--batches', type=int, default=8)
    parser.add_argument('--json')
    args = parser.parse_args()
    device = torch.device(args.device)

    import mae_dense.openmmlab  # noqa: F401  (registers MAEImageFolder)
    from mae_dense.openmmlab.pretrain import MAEDataPreprocessor, MAEImageFolder

    preprocessor = MAEDataPreprocessor().to(device)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        count = args.batch * (args.batches + 2)
        t0 = time.perf_counter()
        write_jpegs(Path(tmp), count)
        print(f'{count} JPEGs 500x375 written in {time.perf_counter() - t0:.1f} s')
        dataset = MAEImageFolder(tmp)  # the pretraining config's augmentation: RRC(224, bicubic) + flip
        dataset.full_init()
        for w in args.workers:
            ips = rate(dataset, lambda b: preprocessor(b, True), device, w, args.batch, args.batches)
            per_worker = ips / max(w, 1)
            rows[f'{w} workers'] = dict(img_per_s=ips, per_worker=per_worker)
            print(f'  {w:>2} workers: {ips:8.1f} img/s ({per_worker:.1f} per worker)')
    title = f'MAE input pipeline (JPEG 500x375 -> 224, batch {args.batch}), {device_name(device)}'
    print(title)
    dump(args.json, dict(title=title, rows=rows))


if __name__ == '__main__':
    main()
