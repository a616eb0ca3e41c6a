"""Layer-level checks against explicit reference computations written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mae_dense.layers import (
    Attention,
    beit_relative_position_index,
    decomposed_rel_pos_bias,
    get_2d_sincos_pos_embed,
    resize_beit_rel_pos_table,
    resize_decomposed_rel_pos,
    window_partition,
    window_unpartition,
)


def test_sincos_matches_official_formula():
    d, h, w = 16, 3, 4
    pe = get_2d_sincos_pos_embed(d, h, w, cls_token=True)
    assert pe.shape == (1 + h * w, d) and torch.all(pe[0] == 0)
    # Official layout: first half encodes the column index, each half [sin | cos], omega=1/10000^(k/(d/4)).
    omega = 1.0 / 10000 ** (np.arange(d // 4) / (d / 4))
    for idx in range(h * w):
        r, c = divmod(idx, w)
        expect = np.concatenate([np.sin(c * omega), np.cos(c * omega), np.sin(r * omega), np.cos(r * omega)])
        np.testing.assert_allclose(pe[1 + idx].numpy(), expect, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('hw,window', [((7, 5), 3), ((6, 6), 3), ((4, 9), 4)])
def test_window_partition_round_trip(hw, window):
    x = torch.randn(2, *hw, 5)
    windows, padded = window_partition(x, window)
    assert padded == (math.ceil(hw[0] / window) * window, math.ceil(hw[1] / window) * window)
    assert windows.shape == (2 * (padded[0] // window) * (padded[1] // window), window * window, 5)
    # The first window is the top-left window x window block.
    torch.testing.assert_close(windows[0].view(window, window, 5), x[0, :window, :window])
    torch.testing.assert_close(window_unpartition(windows, window, padded, hw), x)


def test_beit_index_explicit():
    idx = beit_relative_position_index((2, 2), (2, 2), cls_token=True)
    # offsets (dy, dx) in [-1, 1]: index = (dy + 1) * 3 + (dx + 1); 9 offsets, then cls rows 9, 10, 11.
    tokens = [(0, 0), (0, 1), (1, 0), (1, 1)]
    for i, (yi, xi) in enumerate(tokens):
        for j, (yj, xj) in enumerate(tokens):
            assert idx[1 + i, 1 + j] == (yi - yj + 1) * 3 + (xi - xj + 1)
    assert torch.all(idx[0, 1:] == 9) and torch.all(idx[1:, 0] == 10) and idx[0, 0] == 11


def test_beit_table_resize_hand_case():
    # Window 2 -> 3: the 3x3 offset grid becomes 5x5; aligned corners with factor 2 keep the old values at
    # even positions. Between them, bicubic (a=-0.75) weights at t=1/2 are [-3, 19, 19, -3]/32 with the
    # outer sample clamped to the border: for f = 10*dy + dx at (1/2, 1/2) each axis gives
    # 19/32*1 - 3/32*2 = 13/32 of a step, so the value is 11 * 13/32.
    heads = 2
    dy, dx = torch.meshgrid(torch.arange(3.0), torch.arange(3.0), indexing='ij')
    offsets = torch.stack([dy * 10 + dx, -(dy * 10 + dx)], dim=-1).reshape(9, heads)
    extra = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    out = resize_beit_rel_pos_table(torch.cat([offsets, extra]), (2, 2), (3, 3))
    assert out.shape == (5 * 5 + 3, heads)
    grid = out[:25].reshape(5, 5, heads)
    torch.testing.assert_close(grid[::2, ::2], offsets.reshape(3, 3, heads))
    assert grid[2, 2, 0].item() == pytest.approx(11.0)  # centre offset unchanged
    assert grid[1, 1, 0].item() == pytest.approx(11 * 13 / 32, abs=1e-5)
    torch.testing.assert_close(out[25:], extra)


def test_decomposed_resize_linear_hand_case():
    table = torch.tensor([[0.0], [2.0], [4.0]])
    out = resize_decomposed_rel_pos(table, 5)
    # align_corners=False linear on 3 -> 5: x_src = (i + .5) * 3/5 - .5 = [-0.2, .4, 1, 1.6, 2.2] (clamped)
    torch.testing.assert_close(out[:, 0], torch.tensor([0.0, 0.8, 2.0, 3.2, 4.0]))


def test_decomposed_bias_explicit():
    torch.manual_seed(0)
    b, heads, h, w, d = 1, 2, 3, 2, 4
    q = torch.randn(b, heads, h * w, d)
    rh, rw = torch.randn(2 * h - 1, d), torch.randn(2 * w - 1, d)
    bias = decomposed_rel_pos_bias(q, rh, rw, (h, w), (h, w))
    for n in range(heads):
        for i in range(h * w):
            for j in range(h * w):
                (yi, xi), (yj, xj) = divmod(i, w), divmod(j, w)
                expect = q[0, n, i] @ rh[yi - yj + h - 1] + q[0, n, i] @ rw[xi - xj + w - 1]
                assert bias[0, n, i, j].item() == pytest.approx(expect.item(), abs=1e-5)


@pytest.mark.parametrize('rel_pos', [None, 'beit', 'decomposed'])
def test_sdpa_equals_eager(rel_pos):
    torch.manual_seed(0)
    cls = rel_pos != 'decomposed'
    kw = dict(rel_pos=rel_pos, rel_pos_size=(3, 4), cls_token=cls)
    sdpa, eager = Attention(32, 4, **kw), Attention(32, 4, attn_impl='eager', **kw)
    for p in sdpa.parameters():
        torch.nn.init.normal_(p, std=0.3)
    eager.load_state_dict(sdpa.state_dict())
    x = torch.randn(2, 12 + cls, 32)
    torch.testing.assert_close(sdpa(x, (3, 4)), eager(x, (3, 4)), rtol=1e-5, atol=1e-5)
