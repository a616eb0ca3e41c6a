"""The FLOPs tool: fvcore's convention checked by hand, attention counted, tiny-config report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY_MAE, TINY_MAE_CONFIG, tiny_mae
from torch import nn

from mae_dense.cli import flops

ROOT = Path(__file__).resolve().parents[2]


def test_one_linear_layer_by_hand():
    # (5, 64) @ (64, 32): 5 * 64 * 32 multiply-adds, one FLOP each; the bias add is not counted
    total, by_op, _ = flops._count(nn.Linear(64, 32), (torch.randn(5, 64),))
    assert total == 5 * 64 * 32 == by_op['linear']


def test_tiny_encoder_matches_the_formula():
    mae = tiny_mae(attn_impl='eager').eval()
    imgs = torch.randn(1, 3, 32, 32)
    n, c, depth = 1 + 16, 64, 2
    total, by_op, _ = flops._count(flops._Encoder(mae), (imgs,))
    linear = depth * n * (c * 3 * c + c * c + 2 * c * 4 * c)  # qkv, proj, fc1 + fc2
    attention = depth * 2 * n * n * c  # q k^T and attn v over all heads
    patch_embed = 16 * (3 * 8 * 8) * c
    layer_norm = (2 * depth + 1) * 5 * n * c  # fvcore: 5 FLOPs per element with affine
    assert by_op == {'linear': linear, 'matmul': attention, 'conv': patch_embed, 'layer_norm': layer_norm}
    assert total == linear + attention + patch_embed + layer_norm


def test_sdpa_attention_is_invisible_to_fvcore_and_caught():
    mae = tiny_mae(attn_impl='sdpa').eval()
    _, by_op, skipped = flops._count(flops._Encoder(mae), (torch.randn(1, 3, 32, 32),))
    assert by_op.get('matmul', 0) == 0 and 'aten::scaled_dot_product_attention' in skipped
    with pytest.raises(RuntimeError, match='attn_impl="eager"'):
        flops._check_attention_counted('encoder', by_op, 2 * 2 * 17 * 17 * 64)


def test_tiny_report(tmp_path, capsys):
    out = tmp_path / 'flops.json'
    assert flops.main(['--config', str(TINY_MAE_CONFIG), '--json', str(out)]) == 0
    text = capsys.readouterr().out
    assert 'paper says 3.3x, measured' in text and 'paper says ~9%, measured' in text
    r = json.loads(out.read_text())
    parts = r['parts']
    assert r['num_patches'] == 16 and r['visible_patches'] == 4
    assert parts['encoder_visible']['tokens'] == 5 and parts['encoder_all']['tokens'] == 17
    for part in parts.values():
        assert part['flops'] > 0 and part['params'] > 0 and part['flops_by_operator']['matmul'] > 0
    assert parts['encoder_all']['flops'] > parts['encoder_visible']['flops']
    assert r['ratio_encoder_only'] > r['ratio_with_mask_tokens'] > 1
    assert 0 < r['decoder_per_token_pct'] < 100
    assert parts['encoder_all']['params'] == sum(p.numel() for p in tiny_mae().backbone.parameters())


def test_mask_ratio_zero_gives_ratio_one(tmp_path):
    r = flops.measure(TINY_MAE, mask_ratio=0.0)
    assert r['ratio_encoder_only'] == pytest.approx(1.0) and r['ratio_with_mask_tokens'] == pytest.approx(1.0)


def test_tool_entry_point(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / 'tools/analysis/get_flops.py'),
            '--config',
            str(TINY_MAE_CONFIG),
            '--mask-ratio',
            '0.5',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert 'mask ratio 0.5: 16 patches, 8 visible' in proc.stdout
    bad = subprocess.run(
        [sys.executable, str(ROOT / 'tools/analysis/get_flops.py'), '--arch', 'xl'],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "invalid choice: 'xl'" in bad.stderr
