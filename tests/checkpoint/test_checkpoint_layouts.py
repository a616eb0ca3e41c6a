"""One loader for every layout; strict comparison with what the layout predicts; converters round-trip."""

from __future__ import annotations

import argparse
import importlib.util
import pickle
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, mmseg_mae, mmseg_segmentor, randomize_, seg_vit, timm_vit

from mae_dense.checkpoint import CheckpointError, convert_file, convert_state_dict, detect, load_backbone
from mae_dense.checkpoint.load import optional_keys
from mae_dense.models import VisionTransformer

ROOT = Path(__file__).resolve().parents[2]
D = TINY['embed_dim']


def official_sd(seed=0):
    """Official MAE release layout (= timm ViT names), random values."""
    return {k: v.clone() for k, v in randomize_(timm_vit(), seed).state_dict().items()}


def mm_names(sd, prefix='backbone.'):
    """mmpretrain/mmseg names written out by hand here (independent of the project's rename table)."""
    out = {}
    for k, v in sd.items():
        k2 = k
        if k.startswith('blocks.'):
            k2 = ('layers.' + k[len('blocks.') :]).replace('.norm1.', '.ln1.').replace('.norm2.', '.ln2.')
            k2 = k2.replace('.mlp.fc1.', '.ffn.layers.0.0.').replace('.mlp.fc2.', '.ffn.layers.1.')
        elif k.startswith('patch_embed.proj.'):
            k2 = k.replace('patch_embed.proj.', 'patch_embed.projection.')
        elif k.startswith('norm.'):
            k2 = k.replace('norm.', 'ln1.')
        out[prefix + k2] = v
    return out


def mae_decoder(seed=1):
    g = torch.Generator().manual_seed(seed)
    return {
        'mask_token': torch.randn(1, 1, 32, generator=g),
        'decoder_embed.weight': torch.randn(32, D, generator=g),
        'decoder_pos_embed': torch.zeros(1, 17, 32),
        'decoder_blocks.0.norm1.weight': torch.ones(32),
        'decoder_norm.weight': torch.ones(32),
        'decoder_pred.weight': torch.randn(192, 32, generator=g),
    }


def _close_to(
    vit, sd, names=('blocks.1.attn.qkv.weight', 'blocks.3.mlp.fc2.bias', 'patch_embed.proj.weight')
):
    own = vit.state_dict()
    for n in names:
        torch.testing.assert_close(own[n], sd[n])


def test_official_release_into_seg_mode_reports_fresh_and_dropped(tmp_path):
    sd = official_sd()
    torch.save({'model': sd}, tmp_path / 'mae_pretrain_vit_tiny.pth')
    vit = seg_vit()
    report = load_backbone(vit, tmp_path / 'mae_pretrain_vit_tiny.pth', log=False)
    _close_to(vit, sd)
    line = str(report)
    assert report.layout.name == 'mae' and '\n' not in line
    assert 'blocks.*.attn.relative_position_bias_table (4)' in line and 'blocks.*.gamma_1 (4)' in line
    assert 'norm.weight' in report.dropped  # seg mode has no final norm
    assert torch.equal(
        vit.blocks[0].attn.relative_position_bias_table,
        torch.zeros_like(vit.blocks[0].attn.relative_position_bias_table),
    )


def test_full_mae_training_checkpoint_drops_decoder(tmp_path):
    sd = {**official_sd(), **mae_decoder()}
    ckpt = {
        'model': sd,
        'optimizer': {},
        'epoch': 399,
        'scaler': {},
        'args': argparse.Namespace(mask_ratio=0.75),
    }
    torch.save(ckpt, tmp_path / 'checkpoint-399.pth')
    vit = VisionTransformer(mode='mae', img_size=32, **TINY)
    report = load_backbone(vit, tmp_path / 'checkpoint-399.pth', log=False)
    assert (
        report.fresh == []
        and 'decoder_embed.weight' in report.dropped_other
        and 'mask_token' in report.dropped_other
    )
    assert 'decoder_blocks (1)' not in str(report) and 'decoder_blocks' in str(report)
    _close_to(vit, sd, names=('norm.weight', 'pos_embed', 'cls_token'))


def test_mmpretrain_layout(tmp_path):
    sd = official_sd(seed=3)
    neck = {'neck.' + k: v for k, v in mae_decoder().items()}
    torch.save({'state_dict': {**mm_names(sd), **neck}, 'meta': {'epoch': 400}}, tmp_path / 'mmpretrain.pth')
    vit = VisionTransformer(mode='mae', img_size=32, **TINY)
    report = load_backbone(vit, tmp_path / 'mmpretrain.pth', log=False)
    assert report.layout.name == 'mm' and 'mmpretrain' in report.layout.source
    _close_to(vit, sd, names=('blocks.2.mlp.fc1.weight', 'norm.bias', 'patch_embed.proj.weight'))


@pytest.mark.parametrize('version', ['0.x', '1.x'])
def test_mmseg_segmentor_checkpoint(tmp_path, version):
    model = mmseg_segmentor()
    sd = model.state_dict()
    if version == '0.x':
        ckpt = {
            'meta': {'CLASSES': ('a', 'b'), 'PALETTE': [[0, 0, 0]], 'config': 'x', 'iter': 160000},
            'state_dict': sd,
        }
    else:
        ckpt = {'meta': {'dataset_meta': {'classes': ('a', 'b')}, 'iter': 160000}, 'state_dict': sd}
    torch.save(ckpt, tmp_path / 'upernet.pth')
    vit = seg_vit()
    report = load_backbone(vit, tmp_path / 'upernet.pth', log=False)
    assert report.layout.source == 'mmseg segmentor' and report.fresh == []
    assert any(k.startswith('decode_head.') for k in report.dropped_other)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        model.backbone.eval()
        for e, g in zip(model.backbone(x), vit(x)):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def _mmseg_beit2mmseg():
    """mmseg's own converter function, loaded from the installed package (the reference oracle)."""
    import mmseg

    path = Path(mmseg.__file__).parent / '.mim' / 'tools' / 'model_converters' / 'beit2mmseg.py'
    spec = importlib.util.spec_from_file_location('ref_beit2mmseg', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.convert_beit


def test_reference_beit2mmseg_output_loads(tmp_path):
    sd = official_sd(seed=4)
    converted = _mmseg_beit2mmseg()(sd)  # writes patch_embed twice, keeps 'norm'
    torch.save(converted, tmp_path / 'mae_mmseg.pth')
    vit = seg_vit()
    report = load_backbone(vit, tmp_path / 'mae_mmseg.pth', log=False)
    assert report.layout.name == 'mm'
    _close_to(vit, sd)


def test_our_beit2mmseg_output_loads_into_mmseg_mae_and_gives_same_features(tmp_path):
    sd = official_sd(seed=5)
    torch.save({'model': sd}, tmp_path / 'official.pth')
    rc = subprocess.run(
        [
            sys.executable,
            str(ROOT / 'tools/model_converters/beit2mmseg.py'),
            str(tmp_path / 'official.pth'),
            str(tmp_path / 'mmseg.pth'),
        ],
        capture_output=True,
        text=True,
    )
    assert rc.returncode == 0, rc.stderr
    converted = torch.load(tmp_path / 'mmseg.pth', weights_only=True)['state_dict']
    ref = mmseg_mae()
    result = ref.load_state_dict(converted, strict=False)
    assert result.unexpected_keys == ['ln1.weight', 'ln1.bias']  # the final norm, unused by mmseg's MAE
    assert {k.split('.')[-1] for k in result.missing_keys} == {
        'relative_position_index',
        'relative_position_bias_table',
        'gamma_1',
        'gamma_2',
    }
    with torch.no_grad():
        for blk in ref.layers:  # what mmseg's MAE init gives a fresh table and layer scale
            blk.attn.relative_position_bias_table.zero_()
    ours = seg_vit()
    load_backbone(ours, tmp_path / 'official.pth', log=False)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref.eval()
        for e, g in zip(ref(x), ours(x)):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_pos_embed_resize_matches_mmseg(tmp_path):
    sd = official_sd(seed=6)
    ref = mmseg_mae(img=48)
    expect = ref.resize_abs_pos_embed({'pos_embed': sd['pos_embed'].clone()})['pos_embed']
    vit = seg_vit(img=48)
    load_backbone(vit, {'model': sd}, log=False)
    torch.testing.assert_close(vit.pos_embed.data, expect)


def test_timm_layer_scale_and_beit_layouts():
    sd = official_sd(seed=8)
    timm_ls = {}
    for k, v in sd.items():
        timm_ls[k] = v
    g = torch.Generator().manual_seed(0)
    for i in range(4):
        timm_ls[f'blocks.{i}.ls1.gamma'] = torch.rand(D, generator=g)
        timm_ls[f'blocks.{i}.ls2.gamma'] = torch.rand(D, generator=g)
    vit = seg_vit()
    load_backbone(vit, timm_ls, log=False)
    torch.testing.assert_close(vit.blocks[2].gamma_1.data, timm_ls['blocks.2.ls1.gamma'])

    beit = {k: v for k, v in sd.items() if not k.endswith('attn.qkv.bias')}
    for i in range(4):
        beit[f'blocks.{i}.attn.q_bias'] = torch.full((D,), 1.0 + i)
        beit[f'blocks.{i}.attn.v_bias'] = torch.full((D,), -1.0 - i)
        beit[f'blocks.{i}.gamma_1'] = torch.full((D,), 0.1)
        beit[f'blocks.{i}.gamma_2'] = torch.full((D,), 0.2)
        beit[f'blocks.{i}.attn.relative_position_bias_table'] = torch.randn(
            3 * 3 + 3, 4, generator=g
        )  # window 2
        beit[f'blocks.{i}.attn.relative_position_index'] = torch.zeros(5, 5, dtype=torch.long)
    vit = seg_vit()
    report = load_backbone(vit, beit, log=False)
    assert report.layout.name == 'beit' and 'q/v bias merged into qkv.bias' in report.notes
    qkv_bias = vit.blocks[1].attn.qkv.bias.data
    assert (
        torch.all(qkv_bias[:D] == 2.0)
        and torch.all(qkv_bias[D : 2 * D] == 0)
        and torch.all(qkv_bias[2 * D :] == -2.0)
    )
    table = vit.blocks[1].attn.relative_position_bias_table
    assert table.shape == (7 * 7 + 3, 4)  # window 2 -> window 4 (the 32/8 grid)
    torch.testing.assert_close(table[-3:], beit['blocks.1.attn.relative_position_bias_table'][-3:])


def _vitdet_backbone(seed=9):
    vit = randomize_(
        VisionTransformer(
            mode='det', img_size=64, window_size=4, pretrain_img_size=32, global_blocks=(1, 3), **TINY
        ),
        seed,
    )
    return {k: v.clone() for k, v in vit.state_dict().items()}


def test_detectron2_pkl(tmp_path):
    bb = _vitdet_backbone()
    model = {f'backbone.net.{k}': v.numpy() for k, v in bb.items()}
    model['backbone.simfp_2.0.weight'] = np.zeros((64, 32, 2, 2), np.float32)
    model['roi_heads.box_predictor.cls_score.weight'] = np.zeros((81, 1024), np.float32)
    with open(tmp_path / 'model_final_61ccd1.pkl', 'wb') as f:
        pickle.dump({'model': model, '__author__': 'Detectron2 Model Zoo'}, f)
    vit = VisionTransformer(
        mode='det', img_size=64, window_size=4, pretrain_img_size=32, global_blocks=(1, 3), **TINY
    )
    report = load_backbone(vit, tmp_path / 'model_final_61ccd1.pkl', log=False)
    assert report.layout.source == 'detectron2 ViTDet' and report.fresh == []
    _close_to(vit, bb, names=('blocks.1.attn.rel_pos_h', 'pos_embed', 'blocks.0.attn.rel_pos_w'))
    assert any(k.startswith('roi_heads') for k in report.dropped_other)


def test_mmdet_vitdet_and_rel_pos_resize(tmp_path):
    bb = _vitdet_backbone()
    sd = {f'backbone.{k}': v for k, v in bb.items()}
    sd['neck.lateral_convs.0.conv.weight'] = torch.zeros(8, 64, 1, 1)
    torch.save({'state_dict': sd, 'meta': {}}, tmp_path / 'vitdet.pth')
    # into a model with a larger global grid: global tables are interpolated linearly
    vit = VisionTransformer(
        mode='det', img_size=96, window_size=4, pretrain_img_size=32, global_blocks=(1, 3), **TINY
    )
    load_backbone(vit, tmp_path / 'vitdet.pth', log=False)
    got = vit.blocks[1].attn.rel_pos_h.data
    assert got.shape == (2 * 12 - 1, 16)
    expect = torch.nn.functional.interpolate(bb['blocks.1.attn.rel_pos_h'].T[None], size=23, mode='linear')[
        0
    ].T
    torch.testing.assert_close(got, expect)


def test_official_mae_into_det_mode_keeps_pos_embed_for_runtime_resize():
    sd = official_sd(seed=10)
    vit = VisionTransformer(
        mode='det', img_size=64, window_size=4, pretrain_img_size=32, global_blocks=(1, 3), **TINY
    )
    report = load_backbone(vit, {'model': sd}, log=False)
    torch.testing.assert_close(vit.pos_embed.data, sd['pos_embed'])
    assert 'cls_token' in report.dropped and 'norm.weight' in report.dropped
    assert {r.split('.')[-1] for r in report.fresh} == {'rel_pos_h', 'rel_pos_w'}


def test_optional_keys_are_what_the_model_options_add_and_the_layout_lacks():
    sd = official_sd(seed=12)
    mae = detect(sd, 'x')
    gammas = {f'blocks.{i}.gamma_{j}' for i in range(4) for j in (1, 2)}
    tables = {f'blocks.{i}.attn.relative_position_bias_table' for i in range(4)}
    decomposed = {f'blocks.{i}.attn.rel_pos_{a}' for i in range(4) for a in 'hw'}
    vit = partial(VisionTransformer, mode='mae', img_size=32, **TINY)
    assert optional_keys(vit(), mae) == set()
    assert optional_keys(vit(init_values=0.5), mae) == gammas
    assert optional_keys(vit(rel_pos='beit'), mae) == tables
    assert optional_keys(vit(rel_pos='decomposed', init_values=0.5), mae) == decomposed | gammas
    assert optional_keys(vit(), detect(mm_names(sd), 'x')) == {'norm.weight', 'norm.bias'}
    vitdet = detect(_vitdet_backbone(), 'x')
    assert optional_keys(vit(), vitdet) == {'cls_token', 'norm.weight', 'norm.bias'}

    # Layer scale on: exactly the gammas start at init_values, everything else is the file's.
    scaled = vit(init_values=0.5)
    report = load_backbone(scaled, sd, log=False)
    assert set(report.fresh) == gammas
    torch.testing.assert_close(scaled.blocks[3].gamma_2.data, torch.full((D,), 0.5))
    _close_to(scaled, sd, names=('blocks.2.norm1.weight', 'norm.bias', 'cls_token', 'pos_embed'))

    # A tensor the model has for no such reason is still required, with the one-line error.
    def refusal(model, state_dict):
        with pytest.raises(CheckpointError) as err:
            load_backbone(model, state_dict, log=False)
        return str(err.value)

    no_norm1 = {k: v for k, v in sd.items() if k != 'blocks.2.norm1.weight'}
    assert refusal(vit(init_values=0.5), no_norm1) == (
        '<state dict>: does not fit the model as a official MAE / timm ViT checkpoint: '
        'missing blocks.*.norm1.weight'
    )
    # The final norm: the official layout always carries it, an mmseg backbone need not.
    no_norm = {k: v for k, v in sd.items() if not k.startswith('norm.')}
    assert refusal(vit(), no_norm) == (
        '<state dict>: does not fit the model as a official MAE / timm ViT checkpoint: '
        'missing norm.bias, norm.weight'
    )
    target = vit()
    report = load_backbone(target, mm_names(no_norm), log=False)
    assert sorted(report.fresh) == ['norm.bias', 'norm.weight']
    assert torch.equal(target.norm.weight, torch.ones(D)) and torch.equal(target.norm.bias, torch.zeros(D))
    _close_to(target, sd, names=('blocks.0.mlp.fc1.weight', 'cls_token'))

    # ViTDet has no cls token: the target's stays as initialised.
    target = vit()
    cls = target.cls_token.detach().clone()
    report = load_backbone(target, {f'backbone.{k}': v for k, v in _vitdet_backbone().items()}, log=False)
    assert sorted(report.fresh) == ['cls_token', 'norm.bias', 'norm.weight']
    torch.testing.assert_close(target.cls_token.data, cls)
    _close_to(target, _vitdet_backbone(), names=('blocks.1.attn.qkv.weight', 'pos_embed'))


def test_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    sd = official_sd(seed=11)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / 'mae.safetensors'))
    vit = VisionTransformer(mode='mae', img_size=32, **TINY)
    load_backbone(vit, tmp_path / 'mae.safetensors', log=False)
    _close_to(vit, sd)


def test_wrong_files_fail_with_the_key_list(tmp_path):
    sd = official_sd()
    truncated = {k: v for k, v in sd.items() if not k.startswith('blocks.3.attn')}
    with pytest.raises(CheckpointError, match=r'missing blocks\.\*\.attn\.proj\.bias, .*qkv\.weight'):
        load_backbone(seg_vit(), {'model': truncated}, log=False)
    deeper = dict(sd, **{'blocks.4.norm1.weight': torch.ones(D)})
    with pytest.raises(CheckpointError, match=r'unexpected blocks\.\*\.norm1\.weight'):
        load_backbone(seg_vit(), deeper, log=False)
    with pytest.raises(CheckpointError, match=r'unrecognised checkpoint layout \(first keys: foo'):
        load_backbone(seg_vit(), {'foo': torch.ones(1)}, log=False)
    wide = VisionTransformer(mode='seg', img_size=32, embed_dim=128, depth=4, num_heads=4, patch_size=8)
    with pytest.raises(
        CheckpointError,
        match=r'<state dict>: \S+ has shape \(1, 1, 64\) in the file but \(1, 1, 128\) in the model',
    ):
        load_backbone(wide, sd, log=False)


@pytest.mark.parametrize('src_layout', ['official', 'mm', 'beit2mmseg'])
def test_converters_round_trip(tmp_path, src_layout):
    sd = official_sd(seed=12)
    src = {
        'official': {'model': sd},
        'mm': {'state_dict': mm_names(sd)},
        'beit2mmseg': _mmseg_beit2mmseg()(sd),
    }
    torch.save(src[src_layout], tmp_path / 'src.pth')
    chain = ['mmseg', 'timm', 'project', 'mmseg', 'project']
    prev = tmp_path / 'src.pth'
    for i, to in enumerate(chain):
        out = tmp_path / f'{i}_{to}.pth'
        convert_file(prev, out, to)
        prev = out
    final = torch.load(prev, weights_only=True)['state_dict']
    assert set(final) == set(sd)
    for k in sd:
        assert torch.equal(final[k], sd[k]), k


def test_mmcls2timm_tool_and_general_converter(tmp_path):
    sd = official_sd(seed=13)
    torch.save({'state_dict': mm_names(sd), 'meta': {}}, tmp_path / 'mmcls.pth')
    tools = ROOT / 'tools' / 'model_converters'
    r = subprocess.run(
        [
            sys.executable,
            str(tools / 'mmcls2timm.py'),
            str(tmp_path / 'mmcls.pth'),
            str(tmp_path / 'timm.pth'),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    timm_sd = torch.load(tmp_path / 'timm.pth', weights_only=True)['model']
    ref = timm_vit()
    ref.load_state_dict(timm_sd)  # strict: timm accepts it as is
    r = subprocess.run(
        [
            sys.executable,
            str(tools / 'convert.py'),
            str(tmp_path / 'timm.pth'),
            str(tmp_path / 'p.safetensors'),
            '--to',
            'project',
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert detect(convert_state_dict(timm_sd, 'project'), 'x').name == 'mae'


def test_beit2mmseg_url_offline_error(tmp_path):
    env = {'TORCH_HOME': str(tmp_path / 'th'), 'PATH': '/usr/bin:/bin'}
    url = 'https://127.0.0.1:9/mae/mae_pretrain_vit_base.pth'
    r = subprocess.run(
        [sys.executable, str(ROOT / 'tools/model_converters/beit2mmseg.py'), url, str(tmp_path / 'out.pth')],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 1
    assert r.stderr.count('\n') == 1 and 'download failed' in r.stderr and 'torch.hub cache' in r.stderr
