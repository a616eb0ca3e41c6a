"""ViT Mask R-CNN (the COCO config) train step: SDPA and FlexAttention against eager, same weights, same run.

    python benchmarks/bench_detection.py                       # CPU: ViT-B, 256 px, batch 1
    python benchmarks/bench_detection.py --threads 1           # the same, steadier on a shared machine
    python benchmarks/bench_detection.py --device cuda --full  # ViT-B at 1024 px (the recipe), batch 1
    python benchmarks/bench_detection.py --device cuda --full --arch large --batch 4
    python benchmarks/bench_detection.py --device cuda --full --compile   # + each with its blocks compiled

Attention rows: eager (detectron2's form: the (B, heads, N, N) decomposed bias added to the scores), SDPA
(the bias as its mask) and, on CUDA, FlexAttention (the two small factors q.Rh, q.Rw read in the kernel;
torch has no FlexAttention backward on CPU).

Prints seconds per training step (data preprocessor, forward, loss, backward and AdamW step through the
config's AmpOptimWrapper: fp16 autocast + dynamic loss scale on CUDA, fp32 on CPU), images/s, the speed-up
of SDPA over eager attention and (CUDA) peak memory; then the same for the backbone's forward+backward alone.
On CUDA each model is measured alone on the GPU (its own peak); on CPU the two take turns every round, so
that a changing load on a shared machine reaches both alike.
detectron2 reports 0.314 s/img and 10.9 GB for ViT-B (0.603 s/img, 20.9 GB for ViT-L) on A100s.
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import device_name, dump, measure, report  # noqa: E402

CONFIGS = {
    'base': ROOT / 'configs/coco/mask-rcnn_vit-b-mae_lsj-100e_coco.py',
    'large': ROOT / 'configs/coco/mask-rcnn_vit-l-mae_lsj-100e_coco.py',
}


def load_config(args: argparse.Namespace):
    from mmengine.config import Config

    from mae_dense.openmmlab.engine.fallbacks import cpu_fallback_cfg

    cfg = cpu_fallback_cfg(Config.fromfile(str(CONFIGS[args.arch])))  # AMP: fp32 on CPU, as the tools run it
    cfg.model.backbone.pretrained = None  # random weights: timing does not depend on them
    cfg.model.data_preprocessor.pad_size_divisor = args.size  # square padding to the benchmark size
    if args.depth:
        cfg.model.backbone.depth = args.depth
        cfg.optim_wrapper.paramwise_cfg.num_layers = args.depth
    return cfg


def build(cfg, attn_impl: str, state: dict | None = None, compile_: bool = False) -> nn.Module:
    """The config's detector (on CPU) with the given attention; ``state``: weights to share."""
    from mmdet.registry import MODELS

    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.attn_impl = attn_impl
    cfg.model.backbone.compile = compile_
    model = MODELS.build(cfg.model)
    if state is None:
        model.init_weights()
    else:
        model.load_state_dict(state)
    return model.train()


def batch(n: int, size: int, device: torch.device, num_objects: int = 8, seed: int = 0) -> dict:
    """Random images with ``num_objects`` boxes and box-shaped masks each, as the dataloader gives them."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(n):
        inputs.append(torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8).to(device))
        xy = torch.randint(0, size // 2, (num_objects, 2), generator=g).float()
        wh = torch.randint(size // 16, size // 2, (num_objects, 2), generator=g).float()
        boxes = torch.cat([xy, xy + wh], dim=1)
        masks = np.zeros((num_objects, size, size), np.uint8)
        for k, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
            masks[k, y0:y1, x0:x1] = 1
        s = DetDataSample(
            metainfo=dict(img_shape=(size, size), ori_shape=(size, size), scale_factor=(1.0, 1.0))
        )
        s.gt_instances = InstanceData(
            bboxes=boxes.to(device),
            labels=torch.randint(0, 80, (num_objects,), generator=g).to(device),
            masks=BitmapMasks(masks, size, size),
        )
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def interleaved(fns: dict[str, Callable[[], object]], warmup: int, iters: int) -> dict[str, dict]:
    """CPU: median seconds per call, the implementations taking turns in every round, so that a load that
    changes during the run (a shared machine) reaches all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: dict(seconds=statistics.median(t), peak_gib=None) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--full', action='store_true', help='1024 px, the recipe size (GPU)')
    parser.add_argument('--arch', choices=sorted(CONFIGS), default='base')
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--depth', type=int, default=None, help='fewer blocks (default: the config)')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument(
        '--threads', type=int, default=None, help='CPU threads (1: steadier on a busy machine)'
    )
    parser.add_argument(
        '--impls',
        nargs='+',
        choices=('sdpa', 'flex', 'auto'),
        help='besides eager (default: sdpa, + flex on CUDA)',
    )
    parser.add_argument('--compile', action='store_true', help='also each with its blocks compiled')
    parser.add_argument('--json')
    args = parser.parse_args()
    if args.full:
        args.size = 1024
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    from mmdet.utils import register_all_modules
    from mmengine.logging import MMLogger
    from mmengine.optim import build_optim_wrapper

    import mae_dense.openmmlab  # noqa: F401
    import mae_dense.openmmlab.detection  # noqa: F401

    register_all_modules(init_default_scope=True)
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # not the layer-decay table, twice
    cfg = load_config(args)
    torch.manual_seed(0)
    models = {'eager attention': build(cfg, 'eager', None)}
    state = models['eager attention'].state_dict()
    impls = args.impls or (['sdpa', 'flex'] if device.type == 'cuda' else ['sdpa'])
    for compile_ in (False, True) if args.compile else (False,):
        for impl in impls:
            models[f'{impl} attention{" compiled" if compile_ else ""}'] = build(cfg, impl, state, compile_)
    data = batch(args.batch, args.size, device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    dtype = torch.float16 if device.type == 'cuda' else None

    def backbone_step(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                out = model.backbone(x)
            out[-1].float().square().mean().backward()

        return run

    def train_step(model: nn.Module) -> Callable[[], object]:
        wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
        return lambda: model.train_step(data, wrapper)

    if device.type == 'cuda':
        # One model on the GPU at a time, so that each peak is its own (AdamW states included).
        bb_rows, step_rows = {}, {}
        for name in list(models):
            model = models[name].to(device)
            bb_rows[name] = measure(backbone_step(model), device, warmup=1, iters=args.iters)
            model.zero_grad(set_to_none=True)
            step_rows[name] = measure(train_step(model), device, warmup=1, iters=args.iters)
            models[name] = model.cpu()
            torch.cuda.empty_cache()
    else:
        bb_rows = interleaved({n: backbone_step(m) for n, m in models.items()}, 1, args.iters)
        for m in models.values():
            m.zero_grad(set_to_none=True)
        step_rows = interleaved({n: train_step(m) for n, m in models.items()}, 1, args.iters)

    bb = cfg.model.backbone
    what = f'ViT-{args.arch[0].upper()} ({bb.get("depth")} blocks) Mask R-CNN, batch {args.batch} x {args.size}^2'
    amp = 'fp16 AMP' if device.type == 'cuda' else 'fp32 (AMP falls back on CPU)'
    title = f'train step: {what}, {amp}, {device_name(device)}'
    step_rows = report(title, step_rows, 'eager attention', per=args.batch)
    title2 = (
        f'backbone forward+backward: {what}, {"fp16 autocast" if dtype else "fp32"}, {device_name(device)}'
    )
    bb_rows = report(title2, bb_rows, 'eager attention', per=args.batch)
    dump(args.json, dict(step=dict(title=title, rows=step_rows), backbone=dict(title=title2, rows=bb_rows)))


if __name__ == '__main__':
    main()
