"""The COCO data layer: synthetic generator, checker and the checked mmdet dataset (seconds each)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from mae_dense.data.coco import (
    CATEGORIES,
    DataError,
    ann_file_path,
    check_coco,
    check_coco_files,
    coco_classes,
    image_dir_path,
)
from mae_dense.data.synthetic import generate_synthetic_coco

NUM_TRAIN, NUM_VAL = 6, 4
CLASSES = tuple(category['name'] for category in CATEGORIES)


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic set shared (read-only) by the tests of this module."""
    return generate_synthetic_coco(
        tmp_path_factory.mktemp('coco'), num_train=NUM_TRAIN, num_val=NUM_VAL, seed=0
    )


@pytest.fixture
def coco_copy(coco_root: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic set that a test may break."""
    return Path(shutil.copytree(coco_root, tmp_path / 'coco'))


def _load(root: Path, split: str) -> dict[str, Any]:
    return json.loads(ann_file_path(root, split).read_text())


def _rewrite(root: Path, split: str, edit: Any) -> None:
    data = _load(root, split)
    edit(data)
    ann_file_path(root, split).write_text(json.dumps(data))


def _data_error(root: Path, split: str = 'val', **kwargs: Any) -> str:
    """The message of the DataError that ``check_coco`` raises; it must be one line."""
    with pytest.raises(DataError) as info:
        check_coco(root, split, **kwargs)
    message = str(info.value)
    assert '\n' not in message and message
    return message


# --------------------------------------------------------------------------------------------- generator


def test_generator_writes_the_coco_2017_layout(coco_root: Path) -> None:
    for split, count in (('train', NUM_TRAIN), ('val', NUM_VAL)):
        data = _load(coco_root, split)
        assert {'info', 'licenses', 'images', 'annotations', 'categories'} <= set(data)
        assert len(data['images']) == count
        for image in data['images']:
            assert image['file_name'] == f'{image["id"]:012d}.jpg'
            with Image.open(image_dir_path(coco_root, split) / image['file_name']) as file:
                assert file.format == 'JPEG'
                assert file.size == (image['width'], image['height'])
            assert 64 <= min(image['width'], image['height']) <= 160
        shapes = {image['width'] > image['height'] for image in data['images']}
        assert shapes == {True, False}  # landscape and portrait
    train, val = _load(coco_root, 'train'), _load(coco_root, 'val')
    image_ids = [image['id'] for image in train['images'] + val['images']]
    ann_ids = [ann['id'] for ann in train['annotations'] + val['annotations']]
    assert len(set(image_ids)) == len(image_ids) and len(set(ann_ids)) == len(ann_ids)


def test_categories_are_coco_style_and_not_contiguous(coco_root: Path) -> None:
    categories = _load(coco_root, 'val')['categories']
    assert [c['id'] for c in categories] == [1, 3, 7]
    assert all(c['name'] and c['supercategory'] for c in categories)
    assert coco_classes(ann_file_path(coco_root, 'val')) == CLASSES


def test_generator_is_deterministic(tmp_path: Path) -> None:
    a = generate_synthetic_coco(tmp_path / 'a', num_train=2, num_val=2, seed=3)
    b = generate_synthetic_coco(tmp_path / 'b', num_train=2, num_val=2, seed=3)
    c = generate_synthetic_coco(tmp_path / 'c', num_train=2, num_val=2, seed=4)
    files = sorted(p.relative_to(a) for p in a.rglob('*') if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob('*') if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_pycocotools_loads_and_masks_match_area_and_bbox(coco_root: Path, split: str) -> None:
    coco = COCO(str(ann_file_path(coco_root, split)))
    encodings = set()
    for ann in coco.loadAnns(coco.getAnnIds()):
        mask = coco.annToMask(ann).astype(bool)
        ys, xs = np.nonzero(mask)
        bbox = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert mask.sum() == ann['area'] > 0
        assert [float(v) for v in bbox] == ann['bbox']
        segmentation = ann['segmentation']
        if isinstance(segmentation, list):
            encodings.add('polygon')
        elif isinstance(segmentation['counts'], str):
            encodings.add('rle')
        else:
            assert ann['iscrowd'] == 1
            encodings.add('uncompressed-crowd')
    assert encodings == {'polygon', 'rle', 'uncompressed-crowd'}


@pytest.mark.parametrize('split', ['train', 'val'])
def test_objects_are_painted_in_their_category_colour(coco_root: Path, split: str) -> None:
    coco = COCO(str(ann_file_path(coco_root, split)))
    colours = {}
    for ann in coco.loadAnns(coco.getAnnIds()):
        image = coco.loadImgs(ann['image_id'])[0]
        pixels = np.asarray(
            Image.open(image_dir_path(coco_root, split) / image['file_name']), dtype=np.float64
        )
        colours.setdefault(ann['category_id'], []).append(pixels[coco.annToMask(ann).astype(bool)].mean(0))
    means = {cat: np.mean(values, axis=0) for cat, values in colours.items()}
    assert set(means) == {1, 3, 7}
    assert np.argmax(means[1]) == 0 and np.argmax(means[3]) == 1 and np.argmax(means[7]) == 2


def test_some_images_have_no_objects(coco_root: Path) -> None:
    for split in ('train', 'val'):
        stats = check_coco(coco_root, split, check_sizes=True)
        assert stats['images_without_objects'] >= 1
        assert stats['images'] == (NUM_TRAIN if split == 'train' else NUM_VAL)
        assert stats['categories'] == 3
        assert stats['annotations'] == len(_load(coco_root, split)['annotations'])


# --------------------------------------------------------------------------------------------- checker


def test_missing_data_root(tmp_path: Path) -> None:
    assert 'does not exist' in _data_error(tmp_path / 'nowhere')


def test_missing_annotation_file(coco_copy: Path) -> None:
    ann_file_path(coco_copy, 'val').unlink()
    assert 'instances_val2017.json' in _data_error(coco_copy)


def test_missing_image_dir(coco_copy: Path) -> None:
    shutil.rmtree(image_dir_path(coco_copy, 'val'))
    assert 'val2017' in _data_error(coco_copy)


def test_malformed_json(coco_copy: Path) -> None:
    path = ann_file_path(coco_copy, 'val')
    path.write_text('{"images": [}')
    message = _data_error(coco_copy)
    assert str(path) in message and 'malformed JSON at line 1 column 13' in message


def test_missing_top_level_key(coco_copy: Path) -> None:
    _rewrite(coco_copy, 'val', lambda data: data.pop('categories'))
    assert "'categories'" in _data_error(coco_copy)


def test_annotation_pointing_to_a_missing_image(coco_copy: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data['annotations'][0]['image_id'] = 999

    _rewrite(coco_copy, 'val', edit)
    ann_id = _load(coco_copy, 'val')['annotations'][0]['id']
    message = _data_error(coco_copy)
    assert f'annotation id {ann_id}' in message and 'image_id 999' in message


def test_undeclared_category(coco_copy: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data['annotations'][1]['category_id'] = 5

    _rewrite(coco_copy, 'val', edit)
    ann_id = _load(coco_copy, 'val')['annotations'][1]['id']
    message = _data_error(coco_copy)
    assert f'annotation id {ann_id}' in message and 'category_id 5' in message


def test_negative_box_width(coco_copy: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data['annotations'][2]['bbox'][2] = -3.0

    _rewrite(coco_copy, 'val', edit)
    ann_id = _load(coco_copy, 'val')['annotations'][2]['id']
    message = _data_error(coco_copy)
    assert f'annotation id {ann_id}' in message and 'negative width' in message and '-3.0' in message


def test_missing_image_files(coco_copy: Path) -> None:
    names = [image['file_name'] for image in _load(coco_copy, 'val')['images']][:2]
    for name in names:
        (image_dir_path(coco_copy, 'val') / name).unlink()
    message = _data_error(coco_copy)
    assert '2 image file(s)' in message and all(name in message for name in names)


def test_declared_size_differs_only_with_check_sizes(coco_copy: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data['images'][0]['width'] += 1

    _rewrite(coco_copy, 'val', edit)
    check_coco(coco_copy, 'val')
    name = _load(coco_copy, 'val')['images'][0]['file_name']
    assert name in _data_error(coco_copy, check_sizes=True)


def test_duplicate_annotation_id(coco_copy: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data['annotations'][1]['id'] = data['annotations'][0]['id']

    _rewrite(coco_copy, 'val', edit)
    assert 'duplicate id' in _data_error(coco_copy)


def test_unknown_split(coco_root: Path) -> None:
    assert 'test' in _data_error(coco_root, 'test')


def test_check_coco_files_without_image_dir(coco_root: Path) -> None:
    stats = check_coco_files(ann_file_path(coco_root, 'val'), None)
    assert stats['images'] == NUM_VAL


# --------------------------------------------------------------------------------------------- mmdet


@pytest.fixture(scope='module')
def mmdet_registered() -> None:
    pytest.importorskip('mmdet')
    from mmdet.utils import register_all_modules

    register_all_modules()
    import mae_dense.openmmlab.coco  # noqa: F401


def _dataset_cfg(root: Path, **kwargs: Any) -> dict[str, Any]:
    cfg = dict(
        type='CheckedCocoDataset',
        data_root=str(root),
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        metainfo=dict(classes=CLASSES),
        filter_cfg=None,
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
            dict(type='PackDetInputs'),
        ],
    )
    cfg.update(kwargs)
    return cfg


def _build(cfg: dict[str, Any]) -> Any:
    from mmdet.registry import DATASETS

    return DATASETS.build(cfg)


def _xyxy(bbox: list[float]) -> list[float]:
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def test_checked_dataset_loads_the_synthetic_set(coco_root: Path, mmdet_registered: None) -> None:
    dataset = _build(_dataset_cfg(coco_root))
    assert len(dataset) == NUM_VAL
    assert dataset.metainfo['classes'] == CLASSES
    sample = dataset[0]
    data_sample = sample['data_samples']
    img_id = data_sample.img_id
    anns = [ann for ann in _load(coco_root, 'val')['annotations'] if ann['image_id'] == img_id]
    assert anns
    gt = data_sample.gt_instances
    expected = [_xyxy(ann['bbox']) for ann in anns if not ann['iscrowd']]
    np.testing.assert_allclose(gt.bboxes.tensor.numpy(), np.array(expected, dtype=np.float32))
    crowd = [_xyxy(ann['bbox']) for ann in anns if ann['iscrowd']]
    np.testing.assert_allclose(
        data_sample.ignored_instances.bboxes.tensor.numpy(), np.array(crowd, np.float32)
    )
    cat_ids = [1, 3, 7]
    assert gt.labels.tolist() == [cat_ids.index(ann['category_id']) for ann in anns if not ann['iscrowd']]
    assert tuple(sample['inputs'].shape[1:]) == data_sample.ori_shape
    masks = gt.masks.to_ndarray()
    assert masks.sum(axis=(1, 2)).tolist() == [ann['area'] for ann in anns if not ann['iscrowd']]


def test_checked_dataset_classes_from_ann_file(coco_root: Path, mmdet_registered: None) -> None:
    cfg = _dataset_cfg(coco_root, classes_from_ann_file=True)
    del cfg['metainfo']
    dataset = _build(cfg)
    assert dataset.metainfo['classes'] == CLASSES
    with pytest.raises(ValueError, match='not both'):
        _build(_dataset_cfg(coco_root, classes_from_ann_file=True))


def test_checked_dataset_refuses_class_names_the_file_lacks(coco_root: Path, mmdet_registered: None) -> None:
    """80 COCO names against a file whose categories carry other names: one line at load time, naming the
    first missing class (mmdet would run the whole evaluation and die in results2json)."""
    from mmdet.datasets import CocoDataset

    coco80 = CocoDataset.METAINFO['classes']
    with pytest.raises(DataError) as info:
        _build(_dataset_cfg(coco_root, metainfo=dict(classes=coco80)))
    message = str(info.value)
    assert '\n' not in message and "class 'person'" in message and '80 of its 80 classes' in message
    assert 'instances_val2017.json' in message and "'disk'" in message
    subset = _build(_dataset_cfg(coco_root, metainfo=dict(classes=CLASSES[:2])))  # a subset is fine
    assert subset.metainfo['classes'] == CLASSES[:2]


def test_checked_dataset_raises_the_data_error_unchanged(coco_copy: Path, mmdet_registered: None) -> None:
    name = _load(coco_copy, 'val')['images'][1]['file_name']
    (image_dir_path(coco_copy, 'val') / name).unlink()
    with pytest.raises(DataError, match=name) as info:
        _build(_dataset_cfg(coco_copy))
    assert type(info.value) is DataError and str(info.value) == _data_error(coco_copy)


def test_checked_dataset_non_standard_layout(coco_copy: Path, mmdet_registered: None) -> None:
    ann_file_path(coco_copy, 'val').rename(coco_copy / 'my_val.json')
    image_dir_path(coco_copy, 'val').rename(coco_copy / 'images')
    dataset = _build(_dataset_cfg(coco_copy, ann_file='my_val.json', data_prefix=dict(img='images/')))
    assert len(dataset) == NUM_VAL
    (coco_copy / 'images' / _load_file(coco_copy / 'my_val.json')['images'][0]['file_name']).unlink()
    with pytest.raises(DataError, match='1 image file'):
        _build(_dataset_cfg(coco_copy, ann_file='my_val.json', data_prefix=dict(img='images/')))


def _load_file(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _gt_as_predictions_ap(
    dataset: Any, ann_file: Path, shift: float = 0.0, keep: int | None = None, metric: str = 'CocoMetric'
) -> dict[str, float]:
    """``metric``'s results for the ground truth fed back as predictions (boxes moved by ``shift``; only the
    first ``keep`` objects of each image)."""
    import torch
    from mmdet.registry import METRICS
    from mmengine.structures import InstanceData

    metric = METRICS.build(dict(type=metric, ann_file=str(ann_file), metric=['bbox', 'segm']))
    metric.dataset_meta = dataset.metainfo
    for index in range(len(dataset)):
        data_sample = dataset[index]['data_samples']
        gt = data_sample.gt_instances[:keep]
        data_sample.pred_instances = InstanceData(
            bboxes=gt.bboxes.tensor + shift,
            scores=torch.ones(len(gt)),
            labels=gt.labels,
            masks=torch.from_numpy(gt.masks.to_ndarray()).bool(),
        )
        metric.process({}, [data_sample.to_dict()])
    return metric.evaluate(len(dataset))


def test_ground_truth_as_predictions_scores_ap_one(coco_root: Path, mmdet_registered: None) -> None:
    dataset = _build(_dataset_cfg(coco_root))
    results = _gt_as_predictions_ap(dataset, ann_file_path(coco_root, 'val'))
    assert results['coco/bbox_mAP'] == 1.0
    assert results['coco/segm_mAP'] == 1.0
    shifted = _gt_as_predictions_ap(dataset, ann_file_path(coco_root, 'val'), shift=4.0)
    assert shifted['coco/bbox_mAP'] < 0.9 and shifted['coco/segm_mAP'] == 1.0  # the metric is not vacuous


def test_no_detection_at_all_scores_ap_zero(coco_root: Path, mmdet_registered: None, caplog) -> None:
    """mmdet's CocoMetric logs an error and returns no metric; the COCO configs' metric says 0.0 and why."""
    import mae_dense.openmmlab.detection  # noqa: F401  (the COCO configs import it)

    dataset = _build(_dataset_cfg(coco_root))
    ours = 'CocoMetricScoringNoDetections'
    results = _gt_as_predictions_ap(dataset, ann_file_path(coco_root, 'val'), keep=0, metric=ours)
    assert results == {
        f'coco/{m}_{i}': 0.0
        for m in ('bbox', 'segm')
        for i in ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')
    }
    assert (
        _gt_as_predictions_ap(dataset, ann_file_path(coco_root, 'val'), metric=ours)['coco/bbox_mAP'] == 1.0
    )  # unchanged
