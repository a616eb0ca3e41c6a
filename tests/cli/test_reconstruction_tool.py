"""tools/visualize_reconstruction.py on a tiny checkpoint: grid size, pasted patches, layouts, errors."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_MAE, TINY_MAE_CONFIG, official_layout, randomize_, tiny_mae
from PIL import Image

from mae_dense import visualize as vis
from mae_dense.cli import reconstruct as rec

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / 'tools/visualize_reconstruction.py'
S = 32  # the tiny MAE's image side


def run_tool(*args: str) -> subprocess.CompletedProcess:
    """The tool as users run it (a fresh interpreter: ~3 s of imports)."""
    return subprocess.run(
        [sys.executable, str(TOOL), *args, '--config', str(TINY_MAE_CONFIG), '--device', 'cpu'],
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """The same entry point in this process (fast)."""
    rc = rec.main([*args, '--config', str(TINY_MAE_CONFIG), '--device', 'cpu'])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def images(tmp_path) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate([(48, 40), (32, 64), (100, 100)]):
        p = tmp_path / f'img{i}.{"jpg" if i == 2 else "png"}'
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


@pytest.fixture
def ckpts(tmp_path) -> dict[str, str]:
    model = randomize_(tiny_mae(), seed=4)
    official = tmp_path / 'official.pth'
    torch.save({'model': official_layout(model.state_dict()), 'epoch': 3}, official)
    own = tmp_path / 'own.pth'
    torch.save(model.state_dict(), own)
    return {'official': str(official), 'own': str(own)}


def test_grid_has_four_columns_and_one_row_per_image(tmp_path, images, ckpts):
    out = tmp_path / 'sub' / 'grid.png'
    proc = run_tool(ckpts['official'], *images, '--out', str(out), '--seed', '1')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count('loss') == 3
    grid = np.asarray(Image.open(out))
    assert grid.shape == (3 * S, 4 * S, 3)
    # the visible quarter of the patches is the original, pasted back (4 of 16 patches at mask 0.75)
    for r in range(3):
        original, masked, pasted = (grid[r * S : (r + 1) * S, c * S : (c + 1) * S] for c in (0, 1, 3))
        same = np.all(original == pasted, axis=-1).mean()
        assert same >= 0.25
        assert np.all(original == masked, axis=-1).mean() >= 0.25


def test_layouts_and_seed_give_the_same_grid(tmp_path, images, ckpts, capsys):
    grids = []
    for name, layout, seed in (('a', 'official', '1'), ('b', 'own', '1'), ('c', 'own', '2')):
        out = tmp_path / f'{name}.png'
        rc, _, err = run_main(capsys, ckpts[layout], *images, '--out', str(out), '--seed', seed)
        assert rc == 0, err
        grids.append(np.asarray(Image.open(out)))
    assert grids[0].shape == (3 * S, 4 * S, 3)
    assert np.array_equal(grids[0], grids[1])  # both layouts load the same weights; fixed seed, same masks
    assert not np.array_equal(grids[1], grids[2])  # another seed, other masks


def test_norm_pix_and_mask_ratio_options(tmp_path, images, ckpts, capsys):
    out = tmp_path / 'grid.png'
    rc, _, err = run_main(
        capsys, ckpts['official'], images[0], '--out', str(out), '--norm-pix', '--mask-ratio', '0.5'
    )
    assert rc == 0, err
    assert Image.open(out).size == (4 * S, S)


def test_errors_are_one_line(tmp_path, images, ckpts, capsys):
    out = str(tmp_path / 'grid.png')
    missing = run_tool(str(tmp_path / 'nope.pth'), *images, '--out', out)
    assert missing.returncode == 1 and missing.stderr.strip().count('\n') == 0
    assert 'nope.pth: no such file' in missing.stderr
    rc, _, err = run_main(capsys, ckpts['official'], str(tmp_path / 'cat.jpg'), '--out', out)
    assert rc == 1 and 'cat.jpg: no such file' in err
    bad_img = tmp_path / 'bad.png'
    bad_img.write_text('not an image')
    rc, _, err = run_main(capsys, ckpts['official'], str(bad_img), '--out', out)
    assert rc == 1 and 'not a readable image' in err and err.strip().count('\n') == 0
    sd = torch.load(ckpts['own'])
    sd['backbone.blocks.0.mlp.fc3.weight'] = sd.pop('backbone.blocks.0.mlp.fc1.weight')
    torch.save(sd, tmp_path / 'wrong.pth')
    rc, _, err = run_main(capsys, str(tmp_path / 'wrong.pth'), *images, '--out', out)
    assert rc == 1 and err.strip().count('\n') == 0
    assert 'backbone.blocks.0.mlp.fc3.weight' in err and f'does --config {TINY_MAE_CONFIG} match' in err
    rc, _, err = run_main(capsys, str(tmp_path / 'bad.png'), *images, '--out', out)  # not a checkpoint
    assert rc == 1 and err.startswith('error: ') and err.strip().count('\n') == 0
    assert not Path(out).exists()


def test_panels_in_process():
    model = randomize_(tiny_mae(), seed=2).eval()
    imgs = torch.randn(2, 3, S, S)
    noise = torch.rand(2, 16)
    loss, panels = vis.reconstruct(model, imgs, 0.75, noise)
    _, pred, mask = model(imgs, 0.75, noise=noise)
    m = model.unpatchify(mask.unsqueeze(-1).expand(-1, -1, 192))
    y = model.unpatchify(pred)
    assert torch.equal(panels['original'], imgs)
    assert torch.equal(panels['masked'], imgs * (1 - m))
    torch.testing.assert_close(panels['reconstruction'], y)
    torch.testing.assert_close(panels['reconstruction + visible'], torch.where(m.bool(), y, imgs))
    assert loss > 0


def test_denormalize_pred_inverts_the_norm_pix_target():
    model = tiny_mae(norm_pix_loss=True)
    imgs = torch.randn(2, 3, S, S) * 2 + 0.5
    t = model.patchify(imgs)
    normed = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6) ** 0.5
    torch.testing.assert_close(vis.denormalize_pred(model, imgs, normed), t)


def test_load_image_resizes_and_centre_crops(tmp_path):
    arr = np.zeros((40, 80, 3), dtype=np.uint8)
    arr[:, 20:60] = 255  # a white centre band exactly the crop
    p = tmp_path / 'wide.png'
    Image.fromarray(arr).save(p)
    x = vis.load_image(p, 20)
    assert x.shape == (3, 20, 20)
    img = vis.to_uint8(x)
    assert img[:, 2:18].min() >= 250  # centre crop of the 40x20 resize


def test_training_checkpoint_args_hint(tmp_path, capsys):
    model = tiny_mae()
    ckpt = tmp_path / 'checkpoint-1.pth'
    args = argparse.Namespace(norm_pix_loss=True, model='mae_vit_large_patch16')
    torch.save({'model': official_layout(model.state_dict()), 'args': args}, ckpt)
    vis.load_model(str(ckpt), TINY_MAE, None, 'cpu')
    assert 'pass --norm-pix' in capsys.readouterr().out
