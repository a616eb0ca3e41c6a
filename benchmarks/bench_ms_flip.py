"""ms+flip inference (0.5-1.75 x 2048x512, min_size 512, flip): working memory and time against mmseg's loop.

* ``mmseg loop``: mmseg 0.x's ``aug_test`` on the same model: the 12 views prepared up front (as its
  ``MultiScaleFlipAug`` pipeline does), then per view mmseg's ``slide_inference`` (one crop at a time, each
  crop's logits padded to the full view), resized to the original size, softmax, flipped back, summed.
* ``mae-dense``: the segmentor's ``predict`` with the ms+flip ``test_cfg`` (streamed windows, one view at a
  time, chunk size from the free memory).

Each implementation runs in its own process; its working memory is the peak resident memory during the
call minus the resident memory just before it (``VmHWM`` after resetting it through
``/proc/self/clear_refs``), so that one run's freed memory cannot hide the other's. Predictions of the
two are compared (pixel agreement, largest score difference). CUDA: fp16 autocast (how mmseg 0.x tested the
published model), one warm-up call, allocator peak instead of the resident set.

    python benchmarks/bench_ms_flip.py --device cpu                    # ViT 192-d x 4, UPerHead 128 ch
    python benchmarks/bench_ms_flip.py --device cpu --arch base --ratios 1.75   # ViT-B, the largest view
    python benchmarks/bench_ms_flip.py --device cuda --arch base --image 512 683
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import Memory, device_name, dump, sync  # noqa: E402

IMPLS = ('mmseg loop', 'mae-dense')
RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def build_model(args, device):
    """The ADE20K ViT-B config (150 classes, crop 512, stride 341); ``--arch small`` narrows the networks."""
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    import mae_dense.openmmlab  # noqa: F401

    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(str(ROOT / 'configs/ade20k/upernet_mae-base_fp16_8x2_512x512_160k_ade20k.py'))
    model_cfg = cfg.model
    model_cfg.pretrained = None
    if args.arch == 'small':  # the same 150-class logits at full resolution, a lighter network
        model_cfg.backbone.update(embed_dim=192, depth=4, num_heads=3, out_indices=[0, 1, 2, 3])
        model_cfg.neck.embed_dim = 192
        model_cfg.decode_head.update(in_channels=[192] * 4, channels=128)
        model_cfg.auxiliary_head.in_channels = 192
    model_cfg.test_cfg.update(cfg.ms_flip_test_cfg)
    model_cfg.test_cfg.aug.ratios = list(args.ratios)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    for m in model.modules():  # sane BatchNorm statistics: meaningful (not constant) predictions
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_var.fill_(1.0)
    return model.to(device).eval()


def mmseg_loop(model, image: torch.Tensor) -> torch.Tensor:
    """mmseg 0.x ``aug_test``: mean over the views of softmax(resize(slide_inference(view)))."""
    from mmseg.models.segmentors import EncoderDecoder

    from mae_dense.models.dense_inference import ms_resize_shape

    aug = model.test_cfg.aug
    h, w = image.shape[2:]
    views = []  # the pipeline's views, all prepared before the model runs
    for ratio in aug.ratios:
        size = ms_resize_shape(h, w, aug.scale, ratio, aug.min_size)
        x = F.interpolate(image, size=size, mode='bilinear', align_corners=False)
        views += [(x, False), (x.flip(3), True)]
    total = None
    for x, flipped in views:
        size = tuple(x.shape[2:])
        logits = EncoderDecoder.slide_inference(model, x, [dict(img_shape=size, ori_shape=size)])
        probs = F.interpolate(logits, size=(h, w), mode='bilinear', align_corners=False).softmax(dim=1)
        if flipped:
            probs = probs.flip(3)
        total = probs if total is None else total.add_(probs)  # 0.x: seg_logit += cur_seg_logit
    return total / len(views)


def mae_dense(model, image: torch.Tensor) -> torch.Tensor:
    from mmseg.structures import SegDataSample

    h, w = image.shape[2:]
    sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
    return model.predict(image, [sample])[0].seg_logits.data[None]


def child(args) -> None:
    """One implementation in this process: time, working memory and the scores (saved for the parent)."""
    device = torch.device(args.device)
    model = build_model(args, device)
    image = torch.randn(1, 3, *args.image, generator=torch.Generator().manual_seed(1)).to(device)
    fn = mmseg_loop if args.impl == 'mmseg loop' else mae_dense
    chunks = []
    if args.impl == 'mae-dense':  # record the chunk sizes the memory rule chose
        from mae_dense.models import dense_inference

        rule = dense_inference.auto_max_batch

        def recorded(*a, **kw):
            chunks.append(rule(*a, **kw))
            return chunks[-1]

        dense_inference.auto_max_batch = recorded
    memory = Memory(device)
    amp = dict(device_type=device.type, dtype=torch.float16, enabled=device.type == 'cuda')  # as 0.x tested
    with torch.no_grad(), torch.autocast(**amp):
        if device.type == 'cuda':  # warm-up (kernel selection, allocator); too slow to repeat on CPU
            fn(model, image)
            chunks.clear()
        memory.start()
        t0 = time.perf_counter()
        probs = fn(model, image)
        sync(device)
        seconds = time.perf_counter() - t0
        peak = memory.stop()
    torch.save(probs.float().cpu(), args.out)
    print(json.dumps(dict(seconds=seconds, chunks=chunks, **peak)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--arch', choices=('small', 'base'), default='small')
    parser.add_argument('--image', type=int, nargs=2, default=(512, 1536), help='H W of the test image')
    parser.add_argument('--ratios', type=float, nargs='+', default=RATIOS)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--json')
    parser.add_argument('--impl', choices=IMPLS, help=argparse.SUPPRESS)  # child process
    parser.add_argument('--out', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.impl:
        return child(args)

    rows, scores = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for impl in IMPLS:
            out = str(Path(tmp) / f'{impl.replace(" ", "_")}.pt')
            cmd = [sys.executable, __file__, '--impl', impl, '--out', out, '--device', args.device]
            cmd += ['--arch', args.arch, '--image', *map(str, args.image), '--ratios', *map(str, args.ratios)]
            if args.threads:
                cmd += ['--threads', str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f'{impl} failed:\n{proc.stderr[-3000:]}')
            rows[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
            scores[impl] = torch.load(out)
    ref, ours = scores['mmseg loop'], scores['mae-dense']
    agree = (ref.argmax(1) == ours.argmax(1)).float().mean().item()
    diff = (ref - ours).abs().max().item()
    views = len(args.ratios) * 2
    title = (
        f'ms+flip ({views} views, ratios {list(args.ratios)}), image {args.image[0]}x{args.image[1]}, '
        f'{args.arch} model, {device_name(torch.device(args.device))}; pixel agreement {agree:.6f}, '
        f'largest score difference {diff:.2e}'
    )
    base = rows['mmseg loop']
    print(f'\n{title}')
    print(f'  {"impl":<12} {"s":>8} {"speed-up":>9} {"work GiB":>9} {"peak GiB":>9} {"mem ratio":>9}  chunks')
    for name, r in rows.items():
        r['speedup'] = base['seconds'] / r['seconds']
        r['mem_ratio'] = r['work_gib'] / base['work_gib']
        print(
            f'  {name:<12} {r["seconds"]:>8.2f} {r["speedup"]:>8.2f}x {r["work_gib"]:>9.2f} '
            f'{r["peak_gib"]:>9.2f} {r["mem_ratio"]:>8.2f}x  {r["chunks"] or ""}'
        )
    print("  (mem ratio: working memory / the mmseg loop's; > 1 means more memory)")
    dump(args.json, dict(title=title, rows=rows, pixel_agreement=agree, max_score_diff=diff))


if __name__ == '__main__':
    main()
