"""The package outside its checkout: shipped configs by name, `python -m mae_dense`, a non-editable install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mae_dense.cli import configs
from mae_dense.errors import ToolError

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_configs_resolve_by_name_and_list_their_numbers(capsys):
    path = Path(configs.resolve_config('upernet_mae-base_fp16_8x2_512x512_160k_ade20k'))
    assert path == configs.CONFIG_ROOT / 'ade20k/upernet_mae-base_fp16_8x2_512x512_160k_ade20k.py'
    assert configs.resolve_config('mask-rcnn_vit-b-mae_lsj-100e_coco.py').endswith(
        'coco/mask-rcnn_vit-b-mae_lsj-100e_coco.py'
    )
    with pytest.raises(
        ToolError, match='closest shipped configs: upernet_mae-base_fp16_8x2_512x512_160k_ade20k'
    ):
        configs.resolve_config('upernet_mae-base_fp16_8x2_512x512_160k_ade')
    assert configs.main([]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert 'mIoU 48.13 (mmseg 0.x)' in rows['upernet_mae-base_fp16_8x2_512x512_160k_ade20k']
    assert 'mIoU ms+flip 48.7' in rows['upernet_mae-base_fp16_512x512_160k_ade20k_ms']
    assert 'box AP 55.5, mask AP 49.2' in rows['mask-rcnn_vit-l-mae_lsj-100e_coco']
    assert 'fine-tune top-1 85.4' in rows['mae_vit-large-p16_8xb512-amp-coslr-800e_in1k']
    assert rows['upernet_mae-large_fp16_8x2_512x512_160k_ade20k'].rstrip().endswith('—')
    assert not any(name.startswith('_') for name in rows)  # base files are not runnable


def _source_copy(dst: Path) -> Path:
    """The checkout's files (tracked and new, not ignored) as they are in the working tree, links kept."""
    listed = (
        subprocess.run(
            ['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split('\0')
    )
    for rel in filter(None, listed):
        src, out = ROOT / rel, dst / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            out.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, out)
    return dst


@pytest.mark.slow
def test_non_editable_install_trains_a_shipped_config_by_name_from_anywhere(tmp_path):
    if shutil.which('git') is None or not (ROOT / '.git').exists():
        pytest.skip('needs a git checkout to copy the sources from')
    from mae_dense.data import generate_synthetic_image_folder

    src = _source_copy(tmp_path / 'src')
    wheels, site, elsewhere = tmp_path / 'wheels', tmp_path / 'site', tmp_path / 'elsewhere'
    pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check', '-q']
    subprocess.run(
        [*pip, 'wheel', '--no-deps', '--no-build-isolation', '-w', str(wheels), str(src)], check=True
    )
    subprocess.run(
        [*pip, 'install', '--no-deps', '--target', str(site), *map(str, wheels.glob('*.whl'))], check=True
    )
    assert (site / 'mae_dense/configs/ade20k/upernet_mae-base_fp16_8x2_512x512_160k_ade20k.py').is_file()
    assert (site / 'mae_dense/configs/pipelines/demo.yaml').is_file()
    elsewhere.mkdir()
    env = {'PATH': os.environ.get('PATH', '/usr/bin:/bin'), 'PYTHONPATH': str(site), 'OMP_NUM_THREADS': '2'}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, capture_output=True, text=True, cwd=elsewhere, env=env, timeout=600)

    where = run(sys.executable, '-c', 'import mae_dense; print(mae_dense.__file__)')
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr  # not the checkout
    listed = run(sys.executable, '-m', 'mae_dense', 'configs')
    assert listed.returncode == 0 and 'mIoU 48.13' in listed.stdout, listed.stderr
    data = generate_synthetic_image_folder(tmp_path / 'images', num_classes=2, images_per_class=8, size=40)
    train = run(
        str(site / 'bin/mae-dense'), 'train', 'mae_vit-tiny-p8_1xb16-amp-coslr-10e_synthetic',
        '--work-dir', str(tmp_path / 'work'),
        '--cfg-options', f'train_dataloader.dataset.data_root={data}', 'train_cfg.max_epochs=2',
    )  # fmt: skip
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    assert (tmp_path / 'work/epoch_2.pth').is_file()


def test_unknown_cfg_options_key_warns_with_the_closest_existing_key(capsys):
    import argparse

    from mae_dense.cli.common import load_config

    config = str(ROOT / 'configs/demo/upernet_vit-tiny_synthetic_ade20k.py')
    options = {
        'train_dataloader.num_worker': 0,  # typo
        'train_dataloder.batch_size': 1,  # typo in the first part
        'model.backbone.depth': 4,  # exists
        'optim_wrapper.dtype': 'float32',  # exists (stated in the config for this override)
        'test_cfg.fp16': True,  # exists (stated in the config for this override)
        'param_scheduler.1.end': 300,  # an item of a list
        'model.backbone.grad_checkpointing': True,  # not in the config: an argument of the ViT it builds
        'model.decode_head.dropout_ratio': 0.2,  # an argument of mmseg's BaseDecodeHead, through **kwargs
        'model.backbone.grad_checkpointng': True,  # typo of that argument
        'work_dir_typo': 'x',  # nothing close
    }
    args = argparse.Namespace(cfg_options=options, launcher='none', work_dir=None, local_rank=0)
    cfg = load_config(config, args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f'warning: --cfg-options train_dataloader.num_worker: {config} has no such key '
        '(closest: train_dataloader.num_workers); it is added as a new key',
        f'warning: --cfg-options train_dataloder.batch_size: {config} has no such key '
        '(closest: train_dataloader.batch_size); it is added as a new key',
        f'warning: --cfg-options model.backbone.grad_checkpointng: {config} has no such key '
        '(closest: model.backbone.grad_checkpointing); it is added as a new key',
        f'warning: --cfg-options work_dir_typo: {config} has no such key (nothing close under the top level); '
        'it is added as a new key',
    ]
    assert cfg.train_dataloader.num_worker == 0  # mmengine's merge still happens
