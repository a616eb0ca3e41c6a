"""A pipeline's timm backbone entry: ``{name, timm: MODEL_NAME, checkpoint: FILE | random: true, timm_kwargs}``
is checked before anything runs, and its random init is its own row in the results store."""

from __future__ import annotations

from pathlib import Path

import pytest

from mae_dense.errors import PipelineError
from mae_dense.suite.spec import parse_spec
from mae_dense.suite.weights import backbone_weights

PROBE = 'configs/demo/linear-probe_vit-tiny_synthetic_ade20k.py'
DINO, TINY = 'vit_small_patch14_reg4_dinov2', {'embed_dim': 48, 'depth': 4, 'num_heads': 3}


def _spec(*backbones: dict):
    return parse_spec(dict(backbones=list(backbones), probe=dict(config=PROBE)), 'p.yaml')


def test_timm_entries_keep_their_name_options_and_file(tmp_path):
    ckpt = tmp_path / 'dinov2_vits14_reg4_pretrain.pth'
    ckpt.write_bytes(b'weights')
    spec = _spec(
        dict(name='dino', timm=DINO, checkpoint=str(ckpt)),
        dict(name='dino-tiny', timm=DINO, timm_kwargs=TINY, random=True),
        dict(name='mae', random=True),
    )
    dino, tiny, mae = spec.backbones
    assert (dino.kind, dino.timm, dino.timm_kwargs, dino.checkpoint) == ('checkpoint', DINO, {}, str(ckpt))
    assert (tiny.kind, tiny.timm, tiny.timm_kwargs) == ('random', DINO, TINY)
    assert (mae.timm, mae.timm_kwargs) == (None, {})
    # a random timm backbone is identified by its architecture: another name or size is another row
    assert backbone_weights(tiny, Path('w')) == (
        None,
        'random timm vit_small_patch14_reg4_dinov2 {"depth": 4, "embed_dim": 48, "num_heads": 3}',
    )
    assert backbone_weights(mae, Path('w')) == (None, 'random')


@pytest.mark.parametrize(
    ('entry', 'expected'),
    [
        (dict(timm='vit_smal_patch14_reg4_dinov2', random=True), 'closest: vit_small_patch14_reg4_dinov2'),
        (dict(timm_kwargs=TINY, random=True), 'timm_kwargs needs timm'),
        (dict(timm=DINO, arch='large', random=True), 'timm takes a checkpoint or random: true, not arch'),
        (dict(timm=DINO, timm_kwargs={'depht': 4}, random=True), 'depht'),
        (dict(timm=DINO, timm_kwargs=[4], random=True), 'expected a mapping'),
    ],
)
def test_bad_timm_entry_is_one_line_before_anything_runs(entry, expected):
    with pytest.raises(PipelineError) as err:
        _spec(dict(name='x', **entry))
    msg = str(err.value)
    assert msg.startswith('p.yaml: backbones[0]') and expected in msg and '\n' not in msg
