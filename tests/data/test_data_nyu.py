"""NYU Depth v2 on disk: the synthetic set, the converter of the official .mat files (tiny ones written here
with h5py and scipy), the BTS file lists, and the one-line refusals of bad data."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from mae_dense.data import nyu
from mae_dense.data.synthetic import generate_synthetic_nyu
from mae_dense.data.synthetic import main as synthetic_main
from mae_dense.errors import DataError


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    return generate_synthetic_nyu(tmp_path_factory.mktemp('nyu') / 'nyu', num_train=4, num_test=2, seed=3)


def test_synthetic_nyu_is_the_real_format(root):
    pairs = nyu.check_nyu(root, 'train')
    assert [p[0].stem for p in pairs] == [
        'bathroom_00004',
        'bedroom_00001',
        'kitchen_00002',
        'living_room_00003',
    ]
    image, depth = pairs[0]
    with Image.open(image) as im, Image.open(depth) as dm:
        assert im.mode == 'RGB' and dm.mode == 'I;16' and im.size == dm.size == (128, 96)
        millimetres = np.asarray(dm).astype(np.int64)
    valid = millimetres[millimetres > 0]
    assert 900 <= valid.min() and valid.max() <= 8000  # metres x 1000, within NYU's 10 m
    assert len(nyu.check_nyu(root, 'test')) == 2


def test_synthetic_command_writes_and_checks(tmp_path, capsys):
    assert synthetic_main(['nyu', '-o', str(tmp_path / 'n'), '--num-train', '2', '--num-val', '1']) == 0
    out = capsys.readouterr().out
    assert 'wrote synthetic NYU Depth v2' in out and '2 train, 1 test' in out


def _write_mat(path, images, depths, scenes):
    """A MATLAB v7.3 file as the official one: HDF5 in column order, scenes as references to char arrays."""
    with h5py.File(path, 'w') as f:
        f['images'] = images.transpose(0, 3, 2, 1)  # (N, H, W, 3) -> (N, 3, W, H)
        f['depths'] = depths.transpose(0, 2, 1)  # (N, H, W) -> (N, W, H)
        refs = f.create_group('#refs#')
        ref_list = []
        for i, name in enumerate(scenes):
            refs[f's{i}'] = np.array([[ord(c)] for c in name], dtype=np.uint16)
            ref_list.append(refs[f's{i}'].ref)
        f.create_dataset('scenes', data=np.array([ref_list]), dtype=h5py.ref_dtype)


def test_converter_round_trips_a_tiny_mat_to_millimetre_pngs(tmp_path):
    rng = np.random.default_rng(0)
    n, h, w = 5, 24, 32
    yy, xx = np.mgrid[:h, :w]
    images = np.stack([np.stack([xx * 7, yy * 9, np.full_like(xx, 40 * k)], -1) for k in range(n)]).astype(
        np.uint8
    )
    depths = rng.uniform(0.5, 9.5, size=(n, h, w)).astype(np.float32)
    depths[0, :3, :3] = 0.0  # invalid pixels stay 0
    _write_mat(
        tmp_path / 'labeled.mat',
        images,
        depths,
        ['kitchen_0004', 'bedroom_0012', 'office_0001', 'a_1', 'b_2'],
    )
    savemat(
        tmp_path / 'splits.mat', {'trainNdxs': np.array([[1], [3], [4]]), 'testNdxs': np.array([[2], [5]])}
    )
    counts = nyu.convert_labeled_mat(tmp_path / 'labeled.mat', tmp_path / 'splits.mat', tmp_path / 'out')
    assert counts == {'train': 3, 'test': 2}
    pairs = nyu.check_nyu(tmp_path / 'out', 'train')
    assert [p[1].stem for p in pairs] == ['a_1_00004', 'kitchen_0004_00001', 'office_0001_00003']
    for index, (image, depth) in zip([3, 0, 2], pairs):
        with Image.open(depth) as dm, Image.open(image) as im:
            millimetres, rgb = np.asarray(dm), np.asarray(im).astype(np.int64)
        np.testing.assert_array_equal(
            millimetres, np.round(depths[index].astype(np.float64) * 1000).astype(np.uint16)
        )
        assert (
            np.abs(rgb - images[index]).mean() < 2
        )  # JPEG (quality 95) of smooth ramps, rows and columns in place
    test = nyu.check_nyu(tmp_path / 'out', 'test')
    assert [p[0].stem for p in test] == ['b_2_00005', 'bedroom_0012_00002']


def test_converter_tool_is_one_line_on_a_bad_file(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        'nyu_tool', Path(__file__).parents[2] / 'tools/dataset_converters/nyu.py'
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    savemat(tmp_path / 'splits.mat', {'trainNdxs': np.array([[1]]), 'testNdxs': np.array([[1]])})
    (tmp_path / 'labeled.mat').write_bytes(b'not hdf5')
    assert (
        tool.main([str(tmp_path / 'labeled.mat'), str(tmp_path / 'splits.mat'), '-o', str(tmp_path / 'o')])
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: unreadable labeled set') and 'labeled.mat' in err and '\n' not in err


def test_converter_refuses_a_split_file_without_its_keys(tmp_path):
    savemat(tmp_path / 'splits.mat', {'train': np.array([[1]])})
    with pytest.raises(DataError, match=r"splits.mat has no 'trainNdxs'"):
        nyu.convert_labeled_mat(tmp_path / 'none.mat', tmp_path / 'splits.mat', tmp_path / 'out')


def test_bts_file_list_pairs_and_skips_images_without_depth(tmp_path):
    listing = tmp_path / 'train.txt'
    listing.write_text('/bedroom_0001/rgb_00000.jpg /bedroom_0001/sync_depth_00000.png 518.8579\n'
                       '/bedroom_0001/rgb_00001.jpg None 518.8579\n')  # fmt: skip
    pairs = nyu.read_file_list(listing, tmp_path / 'img', tmp_path / 'dep')
    assert pairs == [
        (tmp_path / 'img/bedroom_0001/rgb_00000.jpg', tmp_path / 'dep/bedroom_0001/sync_depth_00000.png')
    ]


def _copy(root, tmp_path):
    out = tmp_path / 'nyu'
    shutil.copytree(root, out)
    return out


@pytest.mark.parametrize('case', ['8-bit', 'unpaired', 'size', 'missing split'])
def test_bad_data_is_one_line_naming_the_file(case, root, tmp_path):
    data = _copy(root, tmp_path)
    depth = data / 'annotations/train/bedroom_00001.png'
    if case == '8-bit':
        Image.fromarray((np.asarray(Image.open(depth)) // 40).astype(np.uint8)).save(depth)
        expected = r'bedroom_00001.png has PIL mode .L.: expected a single-channel 16-bit PNG'
    elif case == 'unpaired':
        depth.unlink()
        expected = r'1 images in .*images/train have no counterpart in .*annotations/train: bedroom_00001'
    elif case == 'size':
        Image.fromarray(np.zeros((10, 12), np.uint16)).save(depth)
        expected = r'depth map .*bedroom_00001.png is 12x10 but image .*bedroom_00001.jpg is 128x96'
    else:
        shutil.rmtree(data / 'annotations/test')
        depth = data / 'annotations/test'
        expected = r"NYU split 'test' missing under .*: expected .*images/test and .*annotations/test"
    split = 'test' if case == 'missing split' else 'train'
    with pytest.raises(DataError, match=expected) as info:
        nyu.check_nyu(data, split)
    assert '\n' not in str(info.value)


def test_checked_dataset_refuses_before_listing(root, tmp_path):
    """mmseg's NYUDataset would list the images and fail later in a worker; the checked one says which file."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    import mae_dense.openmmlab.depth  # noqa: F401

    init_default_scope('mmseg')  # an earlier test may have left mmdet's scope as the default
    data = _copy(root, tmp_path)
    (data / 'annotations/train/kitchen_00002.png').unlink()
    cfg = dict(type='CheckedNYUDataset', data_root=str(data), pipeline=[],
               data_prefix=dict(img_path='images/train', depth_map_path='annotations/train'))  # fmt: skip
    with pytest.raises(DataError, match='kitchen_00002'):
        DATASETS.build(cfg)
    cfg['data_root'] = str(root)
    dataset = DATASETS.build(cfg)
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    assert [Path(i['depth_map_path']).name for i in infos][:2] == ['bathroom_00004.png', 'bedroom_00001.png']
    assert infos[1]['category_id'] == dataset.metainfo['classes'].index('bedroom')
