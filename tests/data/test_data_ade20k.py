"""ADE20K data layer: synthetic generator, layout checker, zip converter and the checked mmseg dataset."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mae_dense.data import DataError, check_ade20k, convert_official_zip, generate_synthetic_ade20k

REPO = Path(__file__).resolve().parents[2]
# mmseg warns on LoadAnnotations(reduce_zero_label=True), which its own ADE20K configs use.
pytestmark = pytest.mark.filterwarnings('ignore:`reduce_zero_label` will be deprecated')


@pytest.fixture
def ade(tmp_path: Path) -> Path:
    return generate_synthetic_ade20k(tmp_path / 'ADEChallengeData2016', num_train=6, num_val=4, seed=0)


def _one_line_error(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(DataError, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert '\n' not in message
    return message


def _zip_dir(src: Path, zip_path: Path, arcname_root: str) -> Path:
    with zipfile.ZipFile(zip_path, 'w') as archive:
        for path in sorted(src.rglob('*')):
            archive.write(path, f'{arcname_root}/{path.relative_to(src).as_posix()}')
    return zip_path


def test_generator_writes_the_official_layout(ade: Path) -> None:
    sizes = set()
    for split, prefix, count in (('training', 'ADE_train_', 6), ('validation', 'ADE_val_', 4)):
        images = sorted((ade / 'images' / split).glob('*.jpg'))
        labels = sorted((ade / 'annotations' / split).glob('*.png'))
        assert (
            [p.stem for p in images]
            == [p.stem for p in labels]
            == [f'{prefix}{i:08d}' for i in range(1, count + 1)]
        )
        for image_path, label_path in zip(images, labels):
            with Image.open(image_path) as image, Image.open(label_path) as label:
                assert (image.format, image.mode, label.format, label.mode) == ('JPEG', 'RGB', 'PNG', 'L')
                assert image.size == label.size
                values = np.asarray(label)
            assert values.dtype == np.uint8 and values.max() <= 150
            sizes.add(image.size)
    aspects = [w / h for w, h in sizes]
    assert len(sizes) >= 6
    assert min(aspects) < 0.8 and max(aspects) > 1.25  # portrait and landscape
    assert min(min(s) for s in sizes) < 64


def test_generator_is_deterministic_and_learnable(tmp_path: Path) -> None:
    a = generate_synthetic_ade20k(tmp_path / 'a', num_train=2, num_val=1, seed=3)
    b = generate_synthetic_ade20k(tmp_path / 'b', num_train=2, num_val=1, seed=3)
    for path in a.rglob('*.*'):
        assert path.read_bytes() == (b / path.relative_to(a)).read_bytes()
    # Pixels of one class have one colour (plus noise): per-class mean colours are far apart.
    label = np.asarray(Image.open(a / 'annotations/training/ADE_train_00000001.png'))
    image = np.asarray(Image.open(a / 'images/training/ADE_train_00000001.jpg')).astype(np.float32)
    means = [image[label == c].mean(0) for c in np.unique(label) if c and (label == c).sum() > 50]
    assert len(means) >= 2
    assert min(np.abs(m - n).max() for i, m in enumerate(means) for n in means[i + 1 :]) > 20


def test_check_passes_on_synthetic(ade: Path) -> None:
    train = check_ade20k(ade, 'training')
    val = check_ade20k(ade, 'validation', check_values=False)
    assert len(train) == 6 and len(val) == 4
    assert all(img.stem == lbl.stem and img.suffix == '.jpg' and lbl.suffix == '.png' for img, lbl in train)
    assert train == sorted(train)


def test_missing_root(tmp_path: Path) -> None:
    message = _one_line_error('not found', check_ade20k, tmp_path / 'nope')
    assert str(tmp_path / 'nope') in message
    assert 'data/ade/ADEChallengeData2016' in message
    assert 'mae_dense.data.synthetic ade20k' in message and 'ade20k.py' in message


def test_missing_split_dir(ade: Path) -> None:
    shutil.rmtree(ade / 'annotations' / 'validation')
    _one_line_error('annotations/validation', check_ade20k, ade, 'validation')


def test_unpaired_image(ade: Path) -> None:
    (ade / 'annotations/training/ADE_train_00000002.png').unlink()
    message = _one_line_error('1 images', check_ade20k, ade, 'training')
    assert 'ADE_train_00000002' in message


def test_unpaired_label(ade: Path) -> None:
    for i in (3, 4, 5, 6):
        (ade / f'images/training/ADE_train_{i:08d}.jpg').unlink()
    message = _one_line_error('4 labels', check_ade20k, ade, 'training')
    assert 'ADE_train_00000003, ADE_train_00000004, ADE_train_00000005, ...' in message


def test_label_value_out_of_range(ade: Path) -> None:
    path = ade / 'annotations/validation/ADE_val_00000002.png'
    values = np.asarray(Image.open(path)).copy()
    values[0, 0] = 200
    Image.fromarray(values).save(path)
    message = _one_line_error('max value 200 > 150', check_ade20k, ade, 'validation')
    assert str(path) in message
    assert len(check_ade20k(ade, 'validation', check_values=False)) == 4  # the fast check skips values


@pytest.mark.parametrize('damage', ['truncated', 'garbage'])
def test_unreadable_image(ade: Path, damage: str) -> None:
    path = ade / 'images/training/ADE_train_00000004.jpg'
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == 'truncated' else b'not a jpeg at all' * 10)
    message = _one_line_error('unreadable image', check_ade20k, ade, 'training', check_values=False)
    assert str(path) in message


def test_unreadable_label(ade: Path) -> None:
    path = ade / 'annotations/training/ADE_train_00000001.png'
    path.write_bytes(path.read_bytes()[:40])
    assert str(path) in _one_line_error('unreadable label', check_ade20k, ade, 'training')


def test_label_size_mismatch(ade: Path) -> None:
    path = ade / 'annotations/training/ADE_train_00000001.png'
    Image.fromarray(np.ones((10, 12), np.uint8)).save(path)
    assert str(path) in _one_line_error('must match', check_ade20k, ade, 'training')


def test_zip_round_trip(ade: Path, tmp_path: Path) -> None:
    (ade / 'objectInfo150.txt').write_text('Idx\tRatio\tTrain\tVal\tName\n')
    zip_path = _zip_dir(ade, tmp_path / 'ADEChallengeData2016.zip', 'ADEChallengeData2016')
    root = convert_official_zip(zip_path, tmp_path / 'out')
    assert root == tmp_path / 'out' / 'ADEChallengeData2016'
    assert (root / 'objectInfo150.txt').is_file()
    assert [p.name for p in (tmp_path / 'out').iterdir()] == ['ADEChallengeData2016']  # no staging left
    for split in ('training', 'validation'):
        got = [(i.relative_to(root), lbl.relative_to(root)) for i, lbl in check_ade20k(root, split)]
        assert got == [(i.relative_to(ade), lbl.relative_to(ade)) for i, lbl in check_ade20k(ade, split)]
    _one_line_error('already exists', convert_official_zip, zip_path, tmp_path / 'out')


def test_zip_cli(ade: Path, tmp_path: Path) -> None:
    zip_path = _zip_dir(ade, tmp_path / 'ade.zip', 'ADEChallengeData2016')
    cli = [sys.executable, str(REPO / 'tools/dataset_converters/ade20k.py')]
    done = subprocess.run([*cli, str(zip_path), '-o', str(tmp_path / 'out')], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert '6 training, 4 validation' in done.stdout
    failed = subprocess.run([*cli, str(tmp_path / 'missing.zip')], capture_output=True, text=True)
    assert failed.returncode == 1
    assert failed.stderr.startswith('error: ') and failed.stderr.count('\n') == 1


def test_zip_slip_is_refused(ade: Path, tmp_path: Path) -> None:
    zip_path = _zip_dir(ade, tmp_path / 'evil.zip', 'ADEChallengeData2016')
    with zipfile.ZipFile(zip_path, 'a') as archive:
        archive.writestr('ADEChallengeData2016/../../escaped.txt', 'x')
    message = _one_line_error('refusing zip member', convert_official_zip, zip_path, tmp_path / 'out')
    assert 'escaped.txt' in message
    assert not (tmp_path / 'escaped.txt').exists() and not (tmp_path / 'out').exists()
    absolute = tmp_path / 'absolute.zip'
    with zipfile.ZipFile(absolute, 'w') as archive:
        archive.writestr('/etc/evil.txt', 'x')
    _one_line_error('refusing zip member', convert_official_zip, absolute, tmp_path / 'out')


def test_zip_errors(ade: Path, tmp_path: Path) -> None:
    _one_line_error('not found', convert_official_zip, tmp_path / 'missing.zip', tmp_path / 'out')
    (tmp_path / 'fake.zip').write_bytes(b'hello')
    _one_line_error('not a zip file', convert_official_zip, tmp_path / 'fake.zip', tmp_path / 'out')
    wrong = _zip_dir(ade, tmp_path / 'wrong.zip', 'SomethingElse')
    _one_line_error('not the official ADE20K zip', convert_official_zip, wrong, tmp_path / 'out')
    (ade / 'annotations/validation/ADE_val_00000001.png').unlink()
    unpaired = _zip_dir(ade, tmp_path / 'unpaired.zip', 'ADEChallengeData2016')
    message = _one_line_error('ADE_val_00000001', convert_official_zip, unpaired, tmp_path / 'out')
    assert str(unpaired) in message
    assert not (tmp_path / 'out' / 'ADEChallengeData2016').exists()


def test_make_synthetic_cli(tmp_path: Path) -> None:
    script = REPO / 'tools/dataset_converters/make_synthetic_ade20k.py'
    out = tmp_path / 'syn'
    args = [sys.executable, str(script), '-o', str(out), '--num-train', '3', '--num-val', '2', '--seed', '1']
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert '3 training, 2 validation' in done.stdout
    assert len(check_ade20k(out, 'training')) == 3


@pytest.mark.parametrize('kind', ['ade20k', 'coco', 'image-folder'])
def test_synthetic_cli_one_convention(tmp_path: Path, kind: str) -> None:
    out = tmp_path / kind
    args = [sys.executable, '-m', 'mae_dense.data.synthetic', kind, '-o', str(out), '--num-train', '4']
    done = subprocess.run(
        [*args, '--num-val', '2', '--seed', '1'], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('wrote ') and str(out) in done.stdout
    assert {'ade20k': '4 training, 2 validation', 'coco': 'train 4 images', 'image-folder': '4 images'}[
        kind
    ] in (done.stdout)


# ------------------------------------------------------------------------------------ mmseg integration


def _dataset_cfg(data_root: Path | str, split: str = 'validation') -> dict:
    return dict(
        type='CheckedADE20KDataset',
        data_root=str(data_root),
        data_prefix=dict(img_path=f'images/{split}', seg_map_path=f'annotations/{split}'),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', reduce_zero_label=True),
            dict(type='PackSegInputs'),
        ],
    )


@pytest.fixture
def seg_datasets():
    pytest.importorskip('mmseg')
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules

    register_all_modules()
    import mae_dense.openmmlab.ade20k  # noqa: F401  (registers CheckedADE20KDataset)

    return DATASETS


def test_mmseg_dataset_reduces_zero_label(seg_datasets, ade: Path) -> None:
    dataset = seg_datasets.build(_dataset_cfg(ade))
    assert type(dataset).__name__ == 'CheckedADE20KDataset' and len(dataset) == 4
    for index in range(len(dataset)):
        sample = dataset[index]
        name = Path(sample['data_samples'].img_path).stem
        raw = np.asarray(Image.open(ade / 'annotations/validation' / f'{name}.png')).astype(np.int64)
        expected = np.where(raw == 0, 255, raw - 1)
        got = sample['data_samples'].gt_sem_seg.data.numpy()[0]
        assert np.array_equal(got, expected)
        assert tuple(sample['inputs'].shape[1:]) == raw.shape


def test_mmseg_dataset_raises_data_error(seg_datasets, ade: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match='data root .* not found') as info:
        seg_datasets.build(_dataset_cfg(tmp_path / 'missing'))
    assert '\n' not in str(info.value)
    (ade / 'annotations/training/ADE_train_00000005.png').unlink()
    with pytest.raises(DataError, match='ADE_train_00000005'):
        seg_datasets.build(_dataset_cfg(ade, 'training'))
    path = ade / 'annotations/validation/ADE_val_00000001.png'
    Image.fromarray(np.full((4, 4), 151, np.uint8)).save(path)
    with pytest.raises(DataError, match='max value 151'):
        seg_datasets.build(_dataset_cfg(ade))
