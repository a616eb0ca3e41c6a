"""Batched sliding windows and ms+flip against mmseg's own inference on the same weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import build_segmentor

import mae_dense.openmmlab  # noqa: F401
import mae_dense.openmmlab.segmentation  # noqa: F401
from mae_dense.models.dense_inference import ms_resize_shape, window_boxes


def test_window_boxes_cover_like_mmseg():
    boxes = window_boxes(40, 70, (32, 32), (21, 21))
    assert boxes == [
        (0, 32, 0, 32),
        (0, 32, 21, 53),
        (0, 32, 38, 70),
        (8, 40, 0, 32),
        (8, 40, 21, 53),
        (8, 40, 38, 70),
    ]


@pytest.mark.parametrize('size', [(40, 70), (32, 32), (75, 45)])
def test_batched_slide_equals_mmseg_slide_inference(size):
    from mmseg.models.segmentors import EncoderDecoder

    model = build_segmentor()
    x = torch.randn(2, 3, *size)
    metas = [dict(img_shape=size, ori_shape=size)] * 2
    with torch.no_grad():
        expect = EncoderDecoder.slide_inference(
            model, x, [dict(m) for m in metas]
        )  # mmseg, one crop at a time
        got = model.slide_inference(x, metas)
    torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-5)
    assert torch.equal(got.argmax(1), expect.argmax(1))


def test_images_smaller_than_the_crop_are_padded():
    model = build_segmentor()
    x = torch.randn(1, 3, 20, 27)
    with torch.no_grad():
        got = model.slide_inference(x, [dict(img_shape=(20, 27), ori_shape=(20, 27))])
        padded = F.pad(x, (0, 32 - 27, 0, 32 - 20))
        expect = model.encode_decode(padded, [dict(img_shape=(32, 32), ori_shape=(32, 32))])[:, :, :20, :27]
    assert got.shape == (1, 5, 20, 27)
    torch.testing.assert_close(got, expect)


@pytest.mark.parametrize(
    'h,w,ratio,expect',
    [
        (512, 683, 1.0, (512, 683)),  # ADE-like: short side 512 at ratio 1
        (512, 683, 0.5, (512, 683)),  # min_size=512: never below 512
        (512, 683, 1.5, (768, 1025)),  # 768 / 512 * 683 = 1024.5 -> int(x + .5)
        (300, 200, 1.75, (1344, 896)),  # portrait: short side 896
        (1000, 1000, 0.75, (512, 512)),
    ],
)
def test_ms_resize_shape_min_size(h, w, ratio, expect):
    assert ms_resize_shape(h, w, (2048, 512), ratio, 512) == expect


def test_ms_resize_without_min_size_keeps_long_edge_cap():
    assert ms_resize_shape(100, 1000, (2048, 512), 1.0, None) == (205, 2048)


def test_ms_flip_equals_explicit_loop_over_scales_and_flips():
    from mmengine.structures import PixelData  # noqa: F401
    from mmseg.models.segmentors import EncoderDecoder
    from mmseg.structures import SegDataSample

    model = build_segmentor(crop=16, stride=11)  # every scale >= the crop: mmseg's loop needs no padding
    aug = dict(scale=(64, 16), ratios=[0.5, 1.0, 1.5], min_size=16, flip=True)
    model.test_cfg['aug'] = aug
    x = torch.randn(1, 3, 24, 40)
    sample = SegDataSample(metainfo=dict(img_shape=(24, 40), ori_shape=(24, 40)))
    with torch.no_grad():
        out = model.predict(x, [sample])[0]
        probs = []
        for r in aug['ratios']:
            size = ms_resize_shape(24, 40, aug['scale'], r, aug['min_size'])
            xr = F.interpolate(x, size=size, mode='bilinear', align_corners=False)
            for flip in (False, True):
                xi = xr.flip(3) if flip else xr
                meta = [dict(img_shape=size, ori_shape=size)]
                logit = EncoderDecoder.slide_inference(model, xi, meta)
                logit = F.interpolate(logit, size=(24, 40), mode='bilinear', align_corners=False).softmax(1)
                probs.append(logit.flip(3) if flip else logit)
        expect = torch.stack(probs).mean(0)[0]
    torch.testing.assert_close(out.seg_logits.data, expect, rtol=1e-4, atol=1e-5)
    assert torch.equal(out.pred_sem_seg.data[0], expect.argmax(0))


@pytest.mark.parametrize('version', ['0.x', '1.x'])
def test_released_mmseg_checkpoint_gives_mmseg_logits(tmp_path, version):
    """A released mmseg UperNet-MAE file (random weights here) loads into our config; logits equal mmseg's."""
    from helpers import mmseg_segmentor

    from mae_dense.checkpoint import load_model

    ref = mmseg_segmentor()  # mmseg's own EncoderDecoder + MAE backbone + Feature2Pyramid + UPerHead
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(1.0)
            m.running_mean.zero_()
    sd = ref.state_dict()
    if version == '0.x':  # e.g. upernet_mae-base_fp16_8x2_512x512_160k_ade20k_20220426_174752-f92a2975.pth
        ckpt = {
            'meta': {
                'CLASSES': tuple('abcde'),
                'PALETTE': [[0, 0, 0]] * 5,
                'mmseg_version': '0.24.0',
                'config': '...',
                'iter': 160000,
            },
            'state_dict': sd,
            'optimizer': {},
        }
    else:
        ckpt = {
            'meta': {'dataset_meta': {'classes': tuple('abcde')}, 'mmseg_version': '1.2.2'},
            'state_dict': sd,
        }
    torch.save(ckpt, tmp_path / 'released.pth')
    ours = build_segmentor(crop=32)
    report = load_model(ours, tmp_path / 'released.pth', log=False)
    assert report.layout.source == 'mmseg segmentor'
    ref.eval()
    x = torch.randn(1, 3, 32, 32)
    metas = [dict(img_shape=(32, 32), ori_shape=(32, 32))]
    with torch.no_grad():
        torch.testing.assert_close(
            ours.encode_decode(x, metas), ref.encode_decode(x, metas), rtol=1e-5, atol=1e-5
        )
    # a file of another model fails with the key list
    bad = {k: v for k, v in sd.items() if not k.startswith('decode_head.conv_seg')}
    from mae_dense.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=r'missing decode_head \(2\)'):
        load_model(build_segmentor(crop=32), {'state_dict': bad}, log=False)


def test_slide_with_padding_metas_equals_mmseg_slide_inference():
    """A pipeline Pad or the preprocessor's size_divisor puts pad_shape in the metas; mmseg's decode head then
    resizes to pad_shape unless img_shape is a torch.Size (its mark of a sliding window)."""
    from mmseg.models.segmentors import EncoderDecoder

    model = build_segmentor()
    x = torch.randn(1, 3, 48, 64)  # a 40x56 image padded to multiples of 16
    meta = dict(img_shape=(40, 56), ori_shape=(40, 56), pad_shape=(48, 64), padding_size=[0, 8, 0, 8])
    with torch.no_grad():
        expect = EncoderDecoder.slide_inference(model, x, [dict(meta)])
        got = model.slide_inference(x, [dict(meta)])
    torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('chunk', [1, 3, 16])
def test_streamed_chunks_equal_mmseg_slide_inference(chunk, monkeypatch):
    """Any chunk size (fit_memory=False: exactly max_batch), chunks across windows and images: mmseg's."""
    from mmseg.models.segmentors import EncoderDecoder

    model = build_segmentor()
    model.test_cfg.update(max_batch=chunk, fit_memory=False)
    sizes = []
    encode = model.encode_decode
    monkeypatch.setattr(model, 'encode_decode', lambda x, metas: sizes.append(len(x)) or encode(x, metas))
    x = torch.randn(2, 3, 40, 70)  # 6 windows x 2 images = 12 crops
    metas = [dict(img_shape=(40, 70), ori_shape=(40, 70))] * 2
    with torch.no_grad():
        got = model.slide_inference(x, metas)
        assert sizes == [min(chunk, 12 - k) for k in range(0, 12, chunk)]
        expect = EncoderDecoder.slide_inference(model, x, [dict(m) for m in metas])
    torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-5)


def test_each_chunk_is_freed_before_the_next_forward():
    """Streaming: when the model runs on a chunk, no earlier chunk's logits are alive (one chunk + sum)."""
    import weakref

    from mae_dense.models.dense_inference import slide_logits

    earlier: list[weakref.ref] = []

    def encode(crops: torch.Tensor) -> torch.Tensor:
        assert all(ref() is None for ref in earlier), 'an earlier chunk of logits is still alive'
        out = crops.mean(1, keepdim=True).expand(-1, 4, -1, -1) * torch.arange(1.0, 5.0).view(1, 4, 1, 1)
        earlier.append(weakref.ref(out))
        return out

    x = torch.randn(2, 3, 40, 70)
    got = slide_logits(encode, x, 4, (32, 32), (21, 21), max_batch=1)
    assert len(earlier) == 12
    # the mean over the windows covering a pixel of a function of that pixel is the function itself
    torch.testing.assert_close(got, x.mean(1, keepdim=True) * torch.arange(1.0, 5.0).view(1, 4, 1, 1))


def test_auto_max_batch_follows_crop_and_free_memory(monkeypatch):
    from mae_dense.models import dense_inference
    from mae_dense.models.dense_inference import CROP_MEMORY_IN_LOGITS, auto_max_batch

    per_crop = CROP_MEMORY_IN_LOGITS * 150 * 512 * 512 * 4  # 629 MB for ADE20K's 512^2 crops
    monkeypatch.setattr(dense_inference, 'available_memory', lambda device: 80 * 2**30)
    cuda, cpu = torch.device('cuda'), torch.device('cpu')
    assert auto_max_batch(100, (512, 512), 150, 10**9, cuda) == 40 * 2**30 // per_crop == 68  # half of 80 GB
    assert auto_max_batch(16, (512, 512), 150, 10**9, cuda) == 16  # the config's max_batch caps it
    assert auto_max_batch(16, (256, 256), 150, 10**9, cuda) == 16
    # CPU: no more than the running sum it feeds (a 896x2688 view: 1.45 GB -> 2 crops), nor a quarter of RAM
    out = 150 * 896 * 2688 * 4
    assert auto_max_batch(16, (512, 512), 150, out, cpu) == out // per_crop == 2
    monkeypatch.setattr(dense_inference, 'available_memory', lambda device: 2 * 2**30)
    assert auto_max_batch(16, (512, 512), 150, out, cpu) == 1  # 512 MB budget: below one crop, still 1
    assert auto_max_batch(16, (512, 512), 150, out, cuda) == 1


def _seg_batch(classes: int, size: int = 32, batch: int = 2):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    gen = torch.Generator().manual_seed(5)
    inputs = torch.randn(batch, 3, size, size, generator=gen)
    samples = []
    for _ in range(batch):
        label = torch.randint(0, classes, (1, size, size), generator=gen)
        label[:, :5] = 255  # ignored rows
        sample = SegDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size)))
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    return inputs, samples


@pytest.mark.parametrize('avg_non_ignore', [False, True])
def test_banded_upsampled_loss_equals_mmseg_loss_and_gradients(avg_non_ignore):
    """train_cfg.loss_band_rows: the heads' losses, acc_seg and every parameter's gradient equal mmseg's
    loss_by_feat (resize to the label, CrossEntropyLoss, accuracy) on the same weights and batch."""
    ce = dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0, avg_non_ignore=avg_non_ignore)
    aux = dict(
        type='FCNHead', in_channels=64, in_index=2, channels=16, num_convs=1, num_classes=5,
        norm_cfg=dict(type='BN'), loss_decode=dict(ce, loss_weight=0.4),
    )  # fmt: skip
    ref = build_segmentor(auxiliary_head=aux)
    banded = build_segmentor(auxiliary_head=aux, train_cfg=dict(loss_band_rows=7))
    banded.load_state_dict(ref.state_dict())
    inputs, samples = _seg_batch(classes=5)
    results = []
    for model in (ref, banded):
        model.train()
        torch.manual_seed(0)  # the heads' dropout draws the same masks
        losses = model.loss(inputs, samples)
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((losses, grads))
    (losses_ref, grads_ref), (losses, grads) = results
    assert losses.keys() == losses_ref.keys() == {
        'decode.loss_ce', 'decode.acc_seg', 'aux.loss_ce', 'aux.acc_seg'
    }  # fmt: skip
    for key in losses:
        torch.testing.assert_close(losses[key], losses_ref[key], rtol=1e-5, atol=1e-6, msg=key)
    assert grads.keys() == grads_ref.keys() and len(grads) > 10
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-4, atol=1e-6, msg=name)


def test_banded_loss_refuses_a_loss_it_does_not_compute():
    from mae_dense.errors import ConfigError

    with pytest.raises(ConfigError, match=r'model.decode_head has CrossEntropyLoss; .*remove loss_band_rows'):
        build_segmentor(
            train_cfg=dict(loss_band_rows=64),
            decode_head=dict(
                type='UPerHead', in_channels=[64] * 4, in_index=[0, 1, 2, 3], channels=32, num_classes=5,
                loss_decode=dict(type='CrossEntropyLoss', class_weight=[1.0] * 5),
            ),
        )  # fmt: skip
