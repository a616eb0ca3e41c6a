"""timm backbones (mae_dense.models.timm_backbone, mae_dense.checkpoint.timm_load): one release-layout file per
family, in the key layout of the real release file, loaded through timm's own filter, with the features of
timm's own model on the same weights.

The release files are built here from a random timm model by renaming its tensors to the family's original
names. So that this is not the inverse of the mapping under test, the same renaming is applied to the model at
its released size (on the meta device) and must give exactly the key names and shapes of the real release file,
kept as a fixture (tests/models/fixtures/<family>_keys.json, each with its source in the family's public code).
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import pytest
import timm
import torch
from helpers import TIMM_RELEASE_LAYOUTS, randomize_, timm_release_file

from mae_dense.checkpoint.timm_load import load_timm_checkpoint
from mae_dense.errors import CheckpointError, ConfigError
from mae_dense.models.timm_backbone import TimmViT, timm_arch
from mae_dense.optim.layer_decay import get_layer_id

FIXTURES = Path(__file__).resolve().parent / 'fixtures'
TINY = dict(embed_dim=48, depth=4, num_heads=3)


def _fixture(family: str) -> dict:
    return json.loads((FIXTURES / f'{family}_keys.json').read_text())


FAMILIES = {
    # family: (the renaming to its release names (tests/helpers.py), file name, tiny timm arguments)
    'dinov2_reg': (TIMM_RELEASE_LAYOUTS['dinov2_reg'], 'dinov2_reg4_pretrain.pth', dict(TINY, img_size=56)),
    'siglip': (TIMM_RELEASE_LAYOUTS['siglip'], 'open_clip_model.safetensors', dict(TINY, img_size=64)),
    'eva02': (TIMM_RELEASE_LAYOUTS['eva02'], 'eva02_pt_p14.pt', dict(TINY, img_size=56)),
    'deit3': (TIMM_RELEASE_LAYOUTS['deit3'], 'deit_3_224_1k.pth', dict(TINY, img_size=64)),
}


def _keys(tree: dict) -> dict[str, list[int]]:
    sd = tree.get('model', tree)
    return {k: list(v.shape) for k, v in sd.items()}


@pytest.mark.parametrize('family', FAMILIES)
def test_generated_release_file_has_the_real_release_keys_and_shapes(family):
    """The renaming above, applied to timm's model at the released size, gives the real file's layout."""
    fixture = _fixture(family)
    generate = FAMILIES[family][0]
    with torch.device('meta'):
        model = timm.create_model(fixture['timm'], pretrained=False)
    got = _keys(generate(model.state_dict(), model, fixture))
    assert got == fixture['keys']
    assert (fixture['wrapper'] == 'model') == ('model' in generate(model.state_dict(), model, fixture))


def _release_file(family: str, directory: Path, seed: int = 0):
    """(timm's model with random weights, its release-layout file, the tiny timm arguments)."""
    _, name, tiny = FAMILIES[family]
    model, path = timm_release_file(family, directory / name, seed=seed, **tiny)
    return model, path, tiny


@pytest.mark.parametrize('family', FAMILIES)
def test_release_file_loads_strictly_and_gives_timms_features(family, tmp_path, caplog):
    fixture = _fixture(family)
    source, path, tiny = _release_file(family, tmp_path)
    backbone = TimmViT(fixture['timm'], tiny, out_indices=[0, 1, 2, 3], pretrained=str(path)).eval()
    with caplog.at_level(logging.INFO, logger='mae_dense'):
        backbone.init_weights()
    report = caplog.messages[-1]
    n = len(backbone.model.state_dict())
    assert report.startswith(f'{path}: timm {fixture["timm"]}') and f'loaded {n} tensors strictly' in report
    dropped = {'siglip': 'attn_pool.* (', 'deit3': 'head.* (2)', 'dinov2_reg': 'nothing', 'eva02': 'nothing'}
    assert dropped[family] in report.split('dropped: ')[1]
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        ours = backbone(x)
        take = dict(indices=[0, 1, 2, 3], norm=False, output_fmt='NCHW', intermediates_only=True)
        expected = source.forward_intermediates(backbone.fit_patch(x), **take)
        # timm's own loader of the same file (its load_state_dict, the same filter, its strict load)
        oracle = timm.create_model(
            fixture['timm'], pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), dynamic_img_size=True,
            **tiny,
        ).eval()  # fmt: skip
        by_timm = oracle.forward_intermediates(backbone.fit_patch(x), **take)
    assert [tuple(m.shape) for m in ours] == [(2, 48, 4, 5)] * 4  # stride 16 whatever the patch
    for a, b, c in zip(ours, expected, by_timm):
        assert (a - b).abs().max() < 1e-5 and (a - c).abs().max() < 1e-5


def test_patch14_input_is_resized_to_a_stride16_grid_and_the_card_says_so():
    backbone = TimmViT('vit_small_patch14_reg4_dinov2', dict(TINY, img_size=56))
    x = torch.randn(1, 3, 512, 384)
    assert tuple(backbone.fit_patch(x).shape[2:]) == (448, 336)  # 32 x 24 tokens of 14 px
    assert tuple(backbone(x)[0].shape) == (1, 48, 32, 24)
    card = backbone.transfer_additions
    assert 'resized by 14/16' in card['patch_fit'] and 'global attention in every block' in card['windows']
    assert TimmViT('deit3_small_patch16_224', TINY).transfer_additions['patch_fit'] == 'none'


def test_one_decay_rule_gives_the_timm_blocks_their_own_index():
    backbone = TimmViT('vit_small_patch14_reg4_dinov2', dict(TINY, img_size=56))
    ids = {
        f'backbone.model.{k}': get_layer_id(f'backbone.model.{k}', 4, 'backbone.model.')
        for k, _ in backbone.model.named_parameters()
    }
    assert {ids[f'backbone.model.{k}'] for k in ('cls_token', 'reg_token', 'pos_embed')} == {0}
    assert ids['backbone.model.patch_embed.proj.weight'] == 0
    assert ids['backbone.model.blocks.2.attn.qkv.weight'] == 3 and ids['backbone.model.norm.weight'] == 5
    assert get_layer_id('decode_head.conv_seg.weight', 4, 'backbone.model.') == 5


def test_timm_arch_reads_the_size_without_building_weights():
    arch = timm_arch('vit_large_patch14_reg4_dinov2')
    assert (arch.embed_dim, arch.depth, arch.num_heads, arch.patch_size) == (1024, 24, 16, 14)
    assert timm_arch('eva02_base_patch14_224', dict(depth=3)).depth == 3


# ------------------------------------------------------------------------------------------ bad input
def test_misspelt_timm_name_names_the_closest():
    with pytest.raises(ConfigError) as err:
        TimmViT('vit_smal_patch14_reg4_dinov2')
    assert 'closest: vit_small_patch14_reg4_dinov2' in str(err.value) and '\n' not in str(err.value)


def test_file_of_another_family_or_size_names_the_first_difference(tmp_path):
    _, deit, _ = _release_file('deit3', tmp_path)
    dino = TimmViT('vit_small_patch14_reg4_dinov2', dict(TINY, img_size=56))
    with pytest.raises(
        CheckpointError, match=r'does not fit timm vit_small_patch14_reg4_dinov2: missing reg_token'
    ):
        load_timm_checkpoint(dino.model, dino.model_name, deit)
    wider = TimmViT('deit3_small_patch16_224', dict(TINY, img_size=64, embed_dim=96))
    with pytest.raises(CheckpointError) as err:
        load_timm_checkpoint(wider.model, wider.model_name, deit)
    msg = str(err.value)
    assert 'has shape' in msg and 'in the file but' in msg and '\n' not in msg


def test_torchscript_archive_is_refused_with_how_to_convert(tmp_path):
    path = tmp_path / 'ViT-B-16.pt'
    with zipfile.ZipFile(path, 'w') as z:  # the layout of torch.jit.save (OpenAI CLIP's release)
        z.writestr('ViT-B-16/data.pkl', b'')
        z.writestr('ViT-B-16/constants.pkl', b'')
        z.writestr('ViT-B-16/code/__torch__/model.py', b'')
    clip = TimmViT('vit_base_patch16_clip_224', dict(TINY, img_size=64), pretrained=str(path))
    with pytest.raises(
        CheckpointError, match='TorchScript archive .* load it with open_clip .* save its state dict'
    ):
        clip.init_weights()


def test_npz_into_a_model_without_timms_npz_loader_is_one_line(tmp_path):
    import numpy as np

    path = tmp_path / 'eva.npz'
    np.savez(path, x=np.zeros(1))
    eva = TimmViT('eva02_base_patch14_224', dict(TINY, img_size=56), pretrained=str(path))
    with pytest.raises(CheckpointError, match='has no .npz loader; give a state-dict file'):
        eva.init_weights()


def test_clip_state_dict_gives_open_clips_own_features(tmp_path):
    """OpenAI/open_clip CLIP layout (``visual.class_embedding``, ``visual.transformer.resblocks.*``, the text
    tower beside it), checked against open_clip's own vision tower: an oracle outside timm."""
    open_clip = pytest.importorskip('open_clip')
    cfg = dict(
        embed_dim=32,
        vision_cfg=dict(image_size=64, layers=4, width=48, head_width=16, patch_size=16),
        text_cfg=dict(context_length=8, vocab_size=100, width=32, heads=2, layers=1),
    )
    (tmp_path / 'configs').mkdir()
    (tmp_path / 'configs' / 'ViT-Tiny-16-test.json').write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / 'configs')
    clip = randomize_(open_clip.create_model('ViT-Tiny-16-test'), seed=3).eval()
    path = tmp_path / 'clip_state_dict.pth'
    torch.save(clip.state_dict(), path)
    tiny = dict(TINY, img_size=64)
    backbone = TimmViT(
        'vit_base_patch16_clip_224', tiny, out_indices=[0, 1, 2, 3], pretrained=str(path)
    ).eval()
    backbone.init_weights()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = backbone(x)
        theirs = clip.visual.forward_intermediates(x, indices=[0, 1, 2, 3], intermediates_only=True)
    for a, b in zip(ours, theirs['image_intermediates'], strict=True):
        assert (a - b).abs().max() < 1e-5
