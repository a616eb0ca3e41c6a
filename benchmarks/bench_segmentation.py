"""UperNet + MAE on ADE20K-sized inputs: ours against mmseg's own model, same weights, same run.

1. Slide inference images/s: our streamed windows vs mmseg's ``slide_inference`` (one crop at a time).
2. Train-step time and peak memory: our config vs mmseg's ``mae-base_upernet_8xb2-amp-160k`` config (as it
   runs, and with a real AmpOptimWrapper); ours also with the unfused AdamW, to show the fused one's share.

``--attn-impl``/``--compile`` add rows for our config with those backbone options (same weights).

    python benchmarks/bench_segmentation.py                       # CPU: depth 4, crop 128
    python benchmarks/bench_segmentation.py --device cuda --full  # ViT-B, crop 512, 512x683 images
    python benchmarks/bench_segmentation.py --device cuda --full --attn-impl auto --compile
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import device_name, dump, measure, report  # noqa: E402


def configs(args):
    from mmengine.config import Config

    ours = Config.fromfile(str(ROOT / 'configs/ade20k/upernet_mae-base_fp16_8x2_512x512_160k_ade20k.py'))
    import mmseg

    mim = Path(mmseg.__file__).parent / '.mim' / 'configs' / 'mae'
    ref = Config.fromfile(str(mim / 'mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py'))
    crop = (args.crop, args.crop)
    for cfg in (ours, ref):
        cfg.model.pretrained = None
        cfg.model.backbone.img_size = crop
        cfg.model.data_preprocessor.size = crop
        cfg.model.test_cfg.crop_size = crop
        cfg.model.test_cfg.stride = (args.crop * 2 // 3, args.crop * 2 // 3)
        for key in ('depth', 'num_layers'):
            if key in cfg.model.backbone:
                cfg.model.backbone[key] = args.depth
        cfg.optim_wrapper.paramwise_cfg.num_layers = args.depth
        cfg.model.backbone.out_indices = [i * args.depth // 4 + args.depth // 4 - 1 for i in range(4)]
    return ours, ref


def build(cfg, device):
    from mmseg.registry import MODELS

    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.to(device)


def batch(n, h, w, device, classes=150):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(n):
        s = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, classes, (1, h, w), generator=g))
        samples.append(s)
    return dict(
        inputs=[torch.randint(0, 255, (3, h, w), generator=g, dtype=torch.uint8) for _ in range(n)],
        data_samples=samples,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--full', action='store_true')
    parser.add_argument('--crop', type=int, default=128)
    parser.add_argument('--depth', type=int, default=4)
    parser.add_argument(
        '--image', type=int, nargs=2, default=None, help='test image H W (default 1x1.33 crop)'
    )
    parser.add_argument('--train-batch', type=int, default=2)
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument(
        '--attn-impl', choices=('auto', 'sdpa', 'flex', 'eager'), help='extra rows: ours with it'
    )
    parser.add_argument('--compile', action='store_true', help='extra rows: ours with the blocks compiled')
    parser.add_argument('--max-batch', type=int, default=None, help='ours: test_cfg.max_batch (the cap)')
    parser.add_argument('--json')
    args = parser.parse_args()
    if args.full:
        args.crop, args.depth = 512, 12
    h, w = args.image or (args.crop, int(args.crop * 683 / 512))
    device = torch.device(args.device)

    from mmengine.optim import build_optim_wrapper
    from mmseg.models.segmentors import EncoderDecoder
    from mmseg.utils import register_all_modules

    import mae_dense.openmmlab.segmentation  # noqa: F401
    from mae_dense.openmmlab.engine.fallbacks import cpu_fallback_cfg

    register_all_modules(init_default_scope=True)
    ours_cfg, ref_cfg = configs(args)
    if args.max_batch:
        ours_cfg.model.test_cfg.max_batch = args.max_batch
    torch.manual_seed(0)
    ours = build(ours_cfg, device).eval()
    ref = build(ref_cfg, device).eval()
    fast, fast_name = None, ''
    if args.attn_impl or args.compile:
        fast_cfg = copy.deepcopy(ours_cfg)
        if args.attn_impl:
            fast_cfg.model.backbone.attn_impl = args.attn_impl
        fast_cfg.model.backbone.compile = args.compile
        fast_name = ', '.join(
            ([f'attn {args.attn_impl}'] if args.attn_impl else []) + ['compiled'] * args.compile
        )
        fast = build(fast_cfg, device).eval()
        fast.load_state_dict(ours.state_dict())
    from mae_dense.checkpoint.layouts import canonical_to_mm

    ref_sd = {
        ('backbone.' + canonical_to_mm(k[9:]) if k.startswith('backbone.') else k): v
        for k, v in ours.state_dict().items()
    }
    missing, unexpected = ref.load_state_dict(ref_sd, strict=False)
    assert not unexpected and all(k.endswith('relative_position_index') for k in missing), (
        missing,
        unexpected,
    )
    x = torch.randn(1, 3, h, w, device=device)
    metas = [dict(img_shape=(h, w), ori_shape=(h, w))]
    amp = dict(device_type=device.type, dtype=torch.float16, enabled=device.type == 'cuda')

    def slide(model, method):
        def run():
            with torch.no_grad(), torch.autocast(**amp):
                return method(model, x, [dict(m) for m in metas])

        return run

    with torch.no_grad(), torch.autocast(**amp):
        a = EncoderDecoder.slide_inference(ref, x, [dict(m) for m in metas])
        b = ours.slide_inference(x, [dict(m) for m in metas])
    agree = (a.argmax(1) == b.argmax(1)).float().mean().item()
    rows = {
        'mmseg slide_inference': measure(
            slide(ref, EncoderDecoder.slide_inference), device, iters=args.iters
        ),
        'mae-dense streamed slide': measure(
            slide(ours, type(ours).slide_inference), device, iters=args.iters
        ),
    }
    if fast is not None:
        rows[f'mae-dense ({fast_name})'] = measure(
            slide(fast, type(fast).slide_inference), device, iters=args.iters
        )
    title = (
        f'slide inference, crop {args.crop}, image {h}x{w}, depth {args.depth}, '
        f'{"fp16" if amp["enabled"] else "fp32"}, {device_name(device)}; pixel agreement {agree:.4f}'
    )
    slide_rows = report(title, rows, 'mmseg slide_inference', per=1)

    train_rows = {}
    runs = [
        ('mmseg MAE UperNet config', ref_cfg, ref, 'OptimWrapper'),
        ('mmseg model + real AMP', ref_cfg, ref, 'AmpOptimWrapper'),
        ('mae-dense config, AdamW unfused', ours_cfg, ours, 'unfused'),
        ('mae-dense config', ours_cfg, ours, None),
    ]
    if fast is not None:
        runs.append((f'mae-dense config ({fast_name})', ours_cfg, fast, None))
    for name, cfg, model, wrapper_type in runs:
        model.train()
        ow_cfg = copy.deepcopy(cfg.optim_wrapper)
        if wrapper_type == 'unfused':
            ow_cfg.optimizer.pop('fused', None)
        elif wrapper_type:  # mmseg's "amp" config really runs fp32: its fp16=dict(...) is read by nothing
            ow_cfg.type = wrapper_type
            if wrapper_type == 'AmpOptimWrapper':
                ow_cfg.loss_scale = 'dynamic'
        ow_cfg = cpu_fallback_cfg(dict(optim_wrapper=ow_cfg))['optim_wrapper']  # as the tools run it
        wrapper = build_optim_wrapper(model, ow_cfg)
        data = batch(args.train_batch, args.crop, args.crop, device)
        train_rows[name] = measure(
            lambda m=model, wr=wrapper, d=data: m.train_step(d, wr), device, warmup=1, iters=args.iters
        )
    title2 = (
        f'train step, batch {args.train_batch} x {args.crop}^2, depth {args.depth}, {device_name(device)} '
        '(mmseg config as it runs: fp32; ours: AmpOptimWrapper)'
    )
    train_rows = report(title2, train_rows, 'mmseg MAE UperNet config', per=args.train_batch)

    # The optimizer step alone, over our model's parameters and gradients: torch's default AdamW (for-each
    # on CUDA, a loop over parameters on CPU) against the fused one of our configs.
    params = [p for p in ours.parameters() if p.requires_grad]
    for p in params:  # the train steps above left none (zero_grad sets them to None)
        p.grad = torch.randn_like(p)
    adamw_rows = {}
    for name, kw in (('AdamW (default)', {}), ('AdamW fused', dict(fused=True))):
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05, **kw)
        adamw_rows[name] = measure(opt.step, device, warmup=1, iters=args.iters)
    title3 = f'AdamW step over {sum(p.numel() for p in params) / 1e6:.1f}M parameters, {device_name(device)}'
    adamw_rows = report(title3, adamw_rows, 'AdamW (default)', per=1, unit='step')
    dump(
        args.json,
        dict(
            slide=dict(title=title, rows=slide_rows),
            train=dict(title=title2, rows=train_rows),
            adamw=dict(title=title3, rows=adamw_rows),
        ),
    )


if __name__ == '__main__':
    main()
