"""The plain-ViT families' release files (MoCo v3, DINO, iBOT, DeiT, BEiT v1/v2) through the project's ViT.

Each release file is built from random modules in its original layout: timm's ViT or BEiT for the encoder (the
families' own code subclasses or mirrors them), the family's heads and training state as its code builds them.
So that the test is not the inverse of the mapping under test, the same builder at ViT-B size (on the meta
device) must give exactly the key names and shapes listed in ``fixtures/<family>_keys.json``, written from the
family's public code (sources in each file). The tiny file is then loaded by the project's loader into the
``seg`` preset, and its maps are compared with timm's own model on the same weights, taken from the file the
way the family's own code takes them (MoCo v3's convert_to_deit.py, DINO's load_pretrained_weights with
checkpoint_key teacher, ...).
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import pytest
import torch
from helpers import TINY, randomize_, seg_vit
from torch import nn

from mae_dense.checkpoint import CheckpointError, convert_file, load_backbone
from mae_dense.models import VisionTransformer

FIXTURES = Path(__file__).parent / 'fixtures'
# Sizes of the heads and vocabularies: the released ViT-B ones and tiny ones.
VIT_B = dict(img=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp=4096, proj=256, dino_hidden=2048,
             dino_out=65536, vocab=8192, classes=1000)  # fmt: skip
SMALL = dict(img=32, mlp=48, proj=16, dino_hidden=32, dino_out=40, vocab=24, classes=10, **TINY)
LN = partial(nn.LayerNorm, eps=1e-6)  # every family's ViT-B norm


# ------------------------------------------------------------------------------- release-layout builders
def timm_vit(s: dict, num_classes: int = 0) -> nn.Module:
    """timm's ViT: the encoder of MoCo v3 (vits.py subclasses it), DINO/iBOT (same names) and DeiT."""
    import timm.models.vision_transformer as tv

    return tv.VisionTransformer(
        img_size=s['img'], patch_size=s['patch_size'], embed_dim=s['embed_dim'], depth=s['depth'],
        num_heads=s['num_heads'], num_classes=num_classes, global_pool='token' if num_classes else '',
        norm_layer=LN,
    ).eval()  # fmt: skip


def timm_beit(s: dict, depth: int | None = None, **flags) -> nn.Module:
    """timm's BEiT (ported from unilm's, same names): ``flags`` are its position/layer-scale options."""
    from timm.models.beit import Beit

    return Beit(
        img_size=s['img'], patch_size=s['patch_size'], embed_dim=s['embed_dim'], depth=depth or s['depth'],
        num_heads=s['num_heads'], num_classes=0, global_pool='', norm_layer=LN,
        **flags,
    ).eval()  # fmt: skip


def moco_mlp(layers: int, d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """MoCo v3's projector/predictor: Linear (no bias) + BN + ReLU, the last BN without affine."""
    mods: list[nn.Module] = []
    for i in range(layers):
        last = i == layers - 1
        mods.append(nn.Linear(d_in if i == 0 else hidden, d_out if last else hidden, bias=False))
        mods += [nn.BatchNorm1d(d_out, affine=False)] if last else [nn.BatchNorm1d(hidden), nn.ReLU()]
    return nn.Sequential(*mods)


def dino_head(s: dict) -> nn.Module:
    """DINO's head: a 3-layer MLP with GELU to a 256-d bottleneck, then a weight-normed layer to out_dim."""
    head = nn.Module()
    h = s['dino_hidden']
    head.mlp = nn.Sequential(
        nn.Linear(s['embed_dim'], h), nn.GELU(), nn.Linear(h, h), nn.GELU(), nn.Linear(h, 256)
    )
    head.last_layer = nn.utils.weight_norm(nn.Linear(256, s['dino_out'], bias=False))
    return head


def _random(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    if next(module.parameters()).device.type != 'meta':
        randomize_(module, seed)
    return module.state_dict()


def mocov3_release(s: dict, seed: int = 0) -> dict:
    """``vit-b-300ep.pth.tar``: base and momentum encoders with projectors, predictor; DDP ``module.``."""
    moco = nn.Module()
    for name in ('base_encoder', 'momentum_encoder'):
        enc = timm_vit(s)
        enc.head = moco_mlp(3, s['embed_dim'], s['mlp'], s['proj'])
        setattr(moco, name, enc)
    moco.predictor = moco_mlp(2, s['proj'], s['mlp'], s['proj'])
    sd = {f'module.{k}': v for k, v in _random(moco, seed).items()}
    return {
        'epoch': 300,
        'arch': 'vit_base',
        'state_dict': sd,
        'optimizer': {'state': {}, 'param_groups': []},
    }


def dino_network(s: dict, seed: int) -> dict[str, torch.Tensor]:
    net = nn.Module()
    net.backbone, net.head = timm_vit(s), dino_head(s)
    return _random(net, seed)


def dino_full_release(s: dict, seed: int = 0, loss: str = 'dino_loss') -> dict:
    """``dino_vitbase16_pretrain_full_checkpoint.pth``: student (DDP) and teacher, training state. iBOT's
    full ``checkpoint.pth`` has the same entries (main_ibot.py's save_dict), ``ibot_loss`` for ``dino_loss``."""
    return {
        'student': {f'module.{k}': v for k, v in dino_network(s, seed + 1).items()},
        'teacher': dino_network(s, seed),
        'optimizer': {'state': {}, 'param_groups': []},
        'epoch': 400,
        'args': argparse.Namespace(arch='vit_base', patch_size=s['patch_size'], out_dim=s['dino_out']),
        loss: {'center': torch.zeros(1, s['dino_out'])},
    }


# BEiT's pretraining options per release: its positions and layer scale.
BEIT_FLAGS = {
    'pt1k_800ep': dict(use_abs_pos_emb=True, init_values=None),
    'pt22k': dict(use_abs_pos_emb=False, use_shared_rel_pos_bias=True, init_values=0.1),
    'v2_pt1k': dict(use_abs_pos_emb=False, use_shared_rel_pos_bias=True, init_values=0.1),
}


def beit_release(s: dict, version: str, seed: int = 0) -> dict:
    """BEiT ``*_pt1k_800ep.pth`` (absolute positions, no layer scale), BEiT ``*_pt22k.pth`` (a shared
    relative table and its index, layer scale) or BEiT v2 ``beitv2_*_pt1k.pth`` (the same and 2
    ``cls_pt_layers``): encoder, mask token, lm head."""
    flags = BEIT_FLAGS[version]
    v2 = version == 'v2_pt1k'
    net = timm_beit(s, **flags)
    net.mask_token = nn.Parameter(torch.zeros(1, 1, s['embed_dim'], device=net.cls_token.device))
    net.lm_head = nn.Linear(s['embed_dim'], s['vocab'], device=net.cls_token.device)
    if v2:
        net.cls_pt_layers = timm_beit(s, depth=2, **flags).blocks
    sd = dict(_random(net, seed))
    if flags.get('use_shared_rel_pos_bias'):  # unilm registers the index as a persistent buffer; timm not
        sd['rel_pos_bias.relative_position_index'] = net.rel_pos_bias.relative_position_index
    return {'model': sd}


def meta(build, *args, **kwargs):
    """The release at ViT-B size without memory: the names and shapes only."""
    with torch.device('meta'):
        return build(VIT_B, *args, **kwargs)


def assert_matches_fixture(ckpt: dict, fixture: str) -> None:
    """The generated release holds exactly the fixture's top-level entries, key names and shapes."""
    spec = json.loads((FIXTURES / fixture).read_text())
    if spec['top_level'] is not None:
        optional = set(spec.get('top_level_optional', []))
        assert set(spec['top_level']) <= set(ckpt) <= set(spec['top_level']) | optional
    for entry, keys in spec['weights'].items():
        expect = {}
        for key, shape in keys.items():
            if '{i}' in key:
                expect.update({key.replace('{i}', str(i)): tuple(shape) for i in range(spec['depth'])})
            elif '{j}' in key:
                expect.update({key.replace('{j}', str(j)): tuple(shape) for j in range(spec['cls_pt_depth'])})
            else:
                expect[key] = tuple(shape)
        got = ckpt if entry == '' else ckpt[entry]
        assert {k: tuple(v.shape) for k, v in got.items()} == expect, entry


# ------------------------------------------------------------------------------------------ comparisons
def assert_same_maps(ours: nn.Module, reference: nn.Module) -> None:
    """The seg preset's maps at blocks 0-3 equal timm's intermediates (zero relative tables, unit layer
    scale: what the transfer adds changes nothing before training)."""
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expect = reference.forward_intermediates(
            x, indices=[0, 1, 2, 3], norm=False, output_fmt='NCHW', intermediates_only=True
        )
        got = ours(x)
    assert len(got) == len(expect) == 4
    for g, e in zip(got, expect):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def det_vit() -> VisionTransformer:
    return VisionTransformer(
        mode='det', img_size=64, window_size=4, pretrain_img_size=32, global_blocks=(1, 3), **TINY
    ).eval()


def load_into_det(path: Path, reference: dict[str, torch.Tensor]):
    """The det preset takes the same encoder; ViTDet's decomposed tables are added at transfer."""
    vit = det_vit()
    report = load_backbone(vit, path, log=False)
    assert {k.split('.')[-1] for k in report.fresh} == {'rel_pos_h', 'rel_pos_w'}
    for name in ('blocks.2.attn.qkv.weight', 'blocks.3.mlp.fc2.bias', 'patch_embed.proj.weight'):
        torch.testing.assert_close(vit.state_dict()[name], reference[name])
    return report


ADDED_AT_TRANSFER = (
    'freshly initialised: blocks.*.attn.relative_position_bias_table (4), blocks.*.gamma_1 (4), '
    'blocks.*.gamma_2 (4);'
)


# ------------------------------------------------------------------------------------------------ tests
def test_mocov3_base_encoder_loads_heads_and_momentum_encoder_dropped_and_named(tmp_path):
    assert_matches_fixture(meta(mocov3_release), 'mocov3_keys.json')
    ckpt = mocov3_release(SMALL)
    path = tmp_path / 'vit-b-300ep.pth.tar'
    torch.save(ckpt, path)
    vit = seg_vit()
    report = load_backbone(vit, path, log=False)
    line = str(report)
    assert report.layout.name == 'mocov3' and '\n' not in line, line
    assert ADDED_AT_TRANSFER in line
    # the projector (3 Linear, 2 BN of 5 tensors, a last BN without affine: 3), the momentum encoder (its
    # 54 encoder tensors and its projector), the predictor (2 Linear, BN, BN without affine)
    assert line.endswith(
        'dropped: norm.bias, norm.weight, base_encoder.head (16), momentum_encoder (70), predictor (10)'
    ), line
    # MoCo v3's own transfer (convert_to_deit.py): the base encoder minus its head, into timm's ViT
    prefix = 'module.base_encoder.'
    reference = timm_vit(SMALL)
    reference.load_state_dict(
        {
            k[len(prefix) :]: v
            for k, v in ckpt['state_dict'].items()
            if k.startswith(prefix) and '.head.' not in k
        }
    )
    assert_same_maps(vit, reference)
    load_into_det(path, reference.state_dict())
    # the converter writes what convert_to_deit.py writes: {'model': base encoder minus head}, timm names
    convert_file(path, tmp_path / 'deit_format.pth', 'timm')
    converted = torch.load(tmp_path / 'deit_format.pth', weights_only=True)['model']
    assert converted.keys() == reference.state_dict().keys()
    assert all(torch.equal(converted[k], v) for k, v in reference.state_dict().items())


def test_mocov3_file_without_its_base_encoder_is_refused_in_one_line():
    sd = mocov3_release(SMALL)['state_dict']
    momentum_only = {k: v for k, v in sd.items() if not k.startswith('module.base_encoder.')}
    with pytest.raises(CheckpointError) as err:
        load_backbone(seg_vit(), {'state_dict': momentum_only}, log=False)
    msg = str(err.value)
    assert '\n' not in msg and msg.startswith('<state dict>: a MoCo v3 checkpoint without its base encoder')


@pytest.mark.parametrize(
    ('loss', 'filename'),
    [('dino_loss', 'dino_vitbase16_pretrain_full_checkpoint.pth'), ('ibot_loss', 'checkpoint.pth')],
)
def test_dino_and_ibot_full_checkpoints_take_the_teacher_backbone(tmp_path, loss, filename):
    assert_matches_fixture(meta(dino_full_release), 'dino_full_keys.json')
    ckpt = dino_full_release(SMALL, loss=loss)
    path = tmp_path / filename
    torch.save(ckpt, path)  # with args (argparse.Namespace): read by the policy's allow-list
    vit = seg_vit()
    report = load_backbone(vit, path, log=False)
    line = str(report)
    assert report.layout.name == 'dino' and ADDED_AT_TRANSFER in line
    assert line.endswith('dropped: norm.bias, norm.weight, student (62), teacher.head (8)'), line
    # DINO's load_pretrained_weights(checkpoint_key='teacher'): strip module./backbone., the head is unused
    reference = timm_vit(SMALL)
    teacher = ckpt['teacher']
    reference.load_state_dict(
        {k[len('backbone.') :]: v for k, v in teacher.items() if k.startswith('backbone.')}
    )
    assert_same_maps(vit, reference)
    load_into_det(path, reference.state_dict())


def test_dino_full_checkpoint_of_a_resnet_names_its_keys():
    resnet = {'teacher': {'backbone.conv1.weight': torch.zeros(8, 3, 7, 7)}, 'student': {}, 'epoch': 1}
    with pytest.raises(
        CheckpointError, match=r'unrecognised checkpoint layout \(first keys: teacher\.backbone\.conv1'
    ):
        load_backbone(seg_vit(), resnet, log=False)


@pytest.mark.parametrize(
    ('family', 'fixture', 'filename', 'entry'),
    [
        ('dino', 'dino_backbone_keys.json', 'dino_vitbase16_pretrain.pth', None),
        ('ibot', 'ibot_teacher_keys.json', 'checkpoint_teacher.pth', 'state_dict'),
        ('deit', 'deit_keys.json', 'deit_base_patch16_224-b5f2ef4d.pth', 'model'),
    ],
)
def test_bare_timm_named_releases(tmp_path, family, fixture, filename, entry):
    """DINO's and iBOT's backbone files and DeiT (the supervised stand-in) are timm ViTs: the mae layout."""

    def release(s):
        sd = dict(_random(timm_vit(s, num_classes=s['classes'] if family == 'deit' else 0), 3))
        return sd if entry is None else {entry: sd}

    assert_matches_fixture(meta(release), fixture)
    ckpt = release(SMALL)
    torch.save(ckpt, tmp_path / filename)
    vit = seg_vit()
    report = load_backbone(vit, tmp_path / filename, log=False)
    assert report.layout.name == 'mae' and ADDED_AT_TRANSFER in str(report)
    assert str(report).endswith(
        'dropped: norm.bias, norm.weight' + (', head (2)' if family == 'deit' else '')
    )
    reference = timm_vit(SMALL, num_classes=SMALL['classes'] if family == 'deit' else 0)
    reference.load_state_dict(ckpt if entry is None else ckpt[entry])  # as the family's own code, strictly
    assert_same_maps(vit, reference)
    load_into_det(tmp_path / filename, reference.state_dict())


def test_ibot_student_backbone_drops_and_names_its_mask_embedding():
    """iBOT's 22k releases are the student's backbone (``checkpoint_student.pth``): it has ``masked_embed``."""
    sd = dict(_random(timm_vit(SMALL), 4))
    sd['masked_embed'] = torch.randn(1, SMALL['embed_dim'])
    report = load_backbone(seg_vit(), {'state_dict': sd}, log=False)
    assert report.dropped_other == ['masked_embed'] and str(report).endswith(', masked_embed')


def test_distilled_deit_is_refused_in_one_line(tmp_path):
    from timm.models.deit import VisionTransformerDistilled

    def release(s):
        net = VisionTransformerDistilled(
            img_size=s['img'], patch_size=s['patch_size'], embed_dim=s['embed_dim'], depth=s['depth'],
            num_heads=s['num_heads'], num_classes=s['classes'],
        )  # fmt: skip
        return {'model': dict(_random(net, 5))}

    assert_matches_fixture(meta(release), 'deit_distilled_keys.json')
    torch.save(release(SMALL), tmp_path / 'deit_base_distilled_patch16_224-df68dfff.pth')
    with pytest.raises(CheckpointError) as err:
        load_backbone(seg_vit(), tmp_path / 'deit_base_distilled_patch16_224-df68dfff.pth', log=False)
    msg = str(err.value)
    assert '\n' not in msg and 'a distilled DeiT checkpoint (dist_token, head_dist)' in msg
    assert 'deit_base_distilled_patch16_224' in msg.split(';')[1]


@pytest.mark.parametrize(
    ('version', 'filename', 'fixture'),
    [
        ('pt1k_800ep', 'beit_base_patch16_224_pt1k_800ep.pth', 'beit_pt1k_800ep_keys.json'),
        ('pt22k', 'beit_base_patch16_224_pt22k.pth', 'beit_pt22k_keys.json'),
        ('v2_pt1k', 'beitv2_base_patch16_224_pt1k.pth', 'beitv2_pt1k_keys.json'),
    ],
)
def test_beit_pretraining_releases(tmp_path, version, filename, fixture):
    assert_matches_fixture(meta(beit_release, version), fixture)
    ckpt = beit_release(SMALL, version, seed=6)
    path = tmp_path / filename
    torch.save(ckpt, path)
    vit = seg_vit()
    report = load_backbone(vit, path, log=False)
    line = str(report)
    assert report.layout.name == 'beit' and 'q/v bias merged into qkv.bias' in report.notes
    if version == 'pt1k_800ep':
        assert (
            ADDED_AT_TRANSFER in line and 'dropped: norm.bias, norm.weight, lm_head (2), mask_token;' in line
        )
    else:  # the shared table into every block, layer scale from the file, no absolute position
        assert (
            'freshly initialised: pos_embed;' in line
            and 'shared relative table copied into every block' in line
            and 'pos_embed zero (the file has relative positions only)' in line
        )
        assert torch.equal(vit.pos_embed, torch.zeros_like(vit.pos_embed))
        cls_pt = 'cls_pt_layers (30), ' if version == 'v2_pt1k' else ''
        assert f'dropped: norm.bias, norm.weight, {cls_pt}lm_head (2), mask_token;' in line
    reference = timm_beit(SMALL, **BEIT_FLAGS[version])
    encoder = {
        k: v for k, v in ckpt['model'].items() if not k.startswith(('mask_token', 'lm_head', 'cls_pt_'))
    }
    encoder.pop('rel_pos_bias.relative_position_index', None)  # a buffer timm recomputes
    reference.load_state_dict(encoder)
    assert_same_maps(vit, reference)
    # ViTDet's decomposed tables replace BEiT's: the file's tables are dropped and named
    det = det_vit()
    report = load_backbone(det, path, log=False)
    assert {k.split('.')[-1] for k in report.fresh} - {'pos_embed'} == {'rel_pos_h', 'rel_pos_w'}
    if version != 'pt1k_800ep':
        assert 'blocks.*.attn.relative_position_bias_table (4)' in str(report)
