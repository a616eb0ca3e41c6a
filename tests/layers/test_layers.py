"""Layer-level checks against explicit reference computations written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mae_dense.layers import (
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


# ----------------------------------------------------------------------------------------------------------
# Every attention path against the eager one: outputs and gradients (input, qkv/proj weights, bias tables).

# (rel_pos, table grid, input grid, window): BEiT with cls at, under and over the table size; ViTDet windowed
# (a 4x5 grid zero-padded to 3x3 windows) and global (at the table size and interpolated); no bias.
ATTN_CASES = {
    'beit-equal': ('beit', (3, 4), (3, 4), 0),
    'beit-smaller': ('beit', (3, 4), (2, 3), 0),
    'beit-larger': ('beit', (3, 4), (4, 5), 0),
    'decomposed-windowed-padded': ('decomposed', (3, 3), (4, 5), 3),
    'decomposed-global': ('decomposed', (4, 5), (4, 5), 0),
    'decomposed-global-resized': ('decomposed', (3, 4), (4, 5), 0),
    'none': (None, None, (3, 4), 0),
}


def _attn_block(case: str, attn_impl: str, seed: int = 0, dim: int = 32):
    from helpers import randomize_

    from mae_dense.layers import Block

    rel_pos, table_grid, grid, window = ATTN_CASES[case]
    cls = rel_pos != 'decomposed'
    block = Block(
        dim, 4, init_values=1.0, window_size=window, rel_pos=rel_pos, rel_pos_size=table_grid,
        cls_token=cls, attn_impl=attn_impl,
    )  # fmt: skip
    randomize_(block, seed=seed)  # non-zero tables and gammas
    n = grid[0] * grid[1] + cls
    x = torch.randn(2, n, dim, generator=torch.Generator().manual_seed(seed + 1))
    return block, x, grid


def _out_and_grads(block, x, grid):
    x = x.clone().requires_grad_(True)
    out = block(x, grid)
    names = [n for n, _ in block.named_parameters() if n.startswith('attn.')]
    params = dict(block.named_parameters())
    grads = torch.autograd.grad(
        (out * torch.linspace(-1, 1, out.shape[-1], device=out.device)).square().sum(),
        [x] + [params[n] for n in names],
    )
    return out, dict(zip(['input'] + names, grads))


@pytest.fixture
def flex_reference(monkeypatch):
    """FlexAttention's own reference forward and backward, on CPU.

    torch runs FlexAttention's backward only on GPUs (its compiled kernel); on CPU it refuses any input that
    requires grad. Lifting that guard runs the uncompiled higher-order op: the dense reference of the same
    score_mod semantics, including the gradients of captured tensors, which the CUDA kernel implements.
    """
    import warnings

    import torch.nn.attention.flex_attention as fa

    from mae_dense.layers import attention

    monkeypatch.setattr(fa, '_validate_device', lambda *args: None)
    monkeypatch.setattr(attention, '_flex_kernel', lambda q: fa.flex_attention)
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='flex_attention called without torch.compile')
        yield


@pytest.mark.parametrize('case', list(ATTN_CASES))
def test_sdpa_outputs_and_gradients_equal_eager(case):
    out, grads = _out_and_grads(*_attn_block(case, 'sdpa'))
    out_e, grads_e = _out_and_grads(*_attn_block(case, 'eager'))
    torch.testing.assert_close(out, out_e, rtol=1e-5, atol=1e-5)
    assert grads.keys() == grads_e.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], grads_e[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize('case', list(ATTN_CASES))
def test_flex_outputs_and_gradients_equal_eager(case, flex_reference):
    out, grads = _out_and_grads(*_attn_block(case, 'flex'))
    out_e, grads_e = _out_and_grads(*_attn_block(case, 'eager'))
    torch.testing.assert_close(out, out_e, rtol=1e-5, atol=1e-5)
    table_grads = [n for n in grads if n.endswith(('relative_position_bias_table', 'rel_pos_h', 'rel_pos_w'))]
    assert len(table_grads) == (0 if case == 'none' else 1 if case.startswith('beit') else 2)
    for name in grads:
        assert grads[name].abs().sum() > 0, name
        torch.testing.assert_close(grads[name], grads_e[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize('case', ['beit-larger', 'decomposed-windowed-padded', 'decomposed-global'])
def test_compiled_flex_inference_on_cpu_equals_eager(case):
    """The real compiled kernel (C++ on CPU), forward only: torch has no FlexAttention backward on CPU."""
    block, x, grid = _attn_block(case, 'flex')
    ref, _, _ = _attn_block(case, 'eager')
    with torch.no_grad():
        torch.testing.assert_close(block(x, grid), ref(x, grid), rtol=1e-5, atol=1e-5)


def test_flex_refuses_to_train_on_cpu():
    from mae_dense.errors import ConfigError

    block, x, grid = _attn_block('beit-equal', 'flex')
    with pytest.raises(ConfigError, match="attn_impl='flex' on CPU: .* no backward"):
        block(x, grid)


@pytest.mark.parametrize('case', list(ATTN_CASES))
def test_auto_is_sdpa_on_cpu(case):
    out, grads = _out_and_grads(*_attn_block(case, 'auto'))
    out_s, grads_s = _out_and_grads(*_attn_block(case, 'sdpa'))
    assert torch.equal(out, out_s) and all(torch.equal(grads[n], grads_s[n]) for n in grads)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='the compiled FlexAttention backward needs CUDA')
@pytest.mark.parametrize('case', ['beit-larger', 'decomposed-windowed-padded', 'decomposed-global'])
def test_flex_kernel_gradients_equal_eager_on_cuda(case):
    block, x, grid = _attn_block(case, 'flex', dim=64)  # head_dim 16: the Triton kernel's smallest
    ref, _, _ = _attn_block(case, 'eager', dim=64)
    out, grads = _out_and_grads(block.cuda(), x.cuda(), grid)
    out_e, grads_e = _out_and_grads(ref.cuda(), x.cuda(), grid)
    torch.testing.assert_close(out, out_e, rtol=1e-4, atol=1e-4)
    for name in grads:
        torch.testing.assert_close(grads[name], grads_e[name], rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.parametrize('case', ['beit-equal', 'decomposed-windowed-padded'])
def test_an_sdpa_that_drops_the_bias_gradient_is_caught_and_replaced(case, monkeypatch, caplog):
    """Some SDPA kernels (cuDNN's) return no gradient for the additive mask. Stand in for one: the check on
    first use must catch it, say so in one line, and the layer must train through the eager path."""
    from mae_dense.layers import attention

    real = torch.nn.functional.scaled_dot_product_attention

    def drops_mask_grad(q, k, v, attn_mask=None, **kw):
        return real(q, k, v, attn_mask=None if attn_mask is None else attn_mask.detach(), **kw)

    attention._sdpa_returns_bias_grad.cache_clear()
    assert attention.sdpa_returns_bias_grad(torch.randn(2, 4, 13, 8), torch.randn(1, 4, 13, 13))  # CPU's does
    monkeypatch.setattr(torch.nn.functional, 'scaled_dot_product_attention', drops_mask_grad)
    attention._sdpa_returns_bias_grad.cache_clear()
    try:
        with caplog.at_level('WARNING', logger=attention.__name__):
            out, grads = _out_and_grads(*_attn_block(case, 'sdpa'))
            _out_and_grads(*_attn_block(case, 'sdpa'))  # a second model of the same shapes: said once
        # without the check the bias would get no gradient at all
        block, x, grid = _attn_block(case, 'sdpa')
        tables = [p for n, p in block.named_parameters() if 'rel' in n]
        unchecked = attention.Attention.forward.__globals__
        monkeypatch.setitem(unchecked, 'sdpa_returns_bias_grad', lambda q, bias: True)
        block(x, grid).square().sum().backward()
        assert all(p.grad is None or not p.grad.any() for p in tables)
    finally:
        attention._sdpa_returns_bias_grad.cache_clear()
    out_e, grads_e = _out_and_grads(*_attn_block(case, 'eager'))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and 'returns no correct gradient for its additive mask' in lines[0], lines
    torch.testing.assert_close(out, out_e, rtol=1e-5, atol=1e-6)
    for name in grads:
        assert grads[name].abs().sum() > 0, name
        torch.testing.assert_close(grads[name], grads_e[name], rtol=1e-4, atol=1e-5, msg=name)
