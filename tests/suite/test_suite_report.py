"""The results store and the report built from it: mean ± std over seeds, every seed's curves, '—' with the
reason for a missing metric, failed cells, figures, and the HTML page checked in a headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mae_dense.suite.board import matrix
from mae_dense.suite.figures import curves_figure, detection_rows, panel_png, segmentation_rows
from mae_dense.suite.outputs import task_metrics
from mae_dense.suite.report import write_report
from mae_dense.suite.store import ResultStore
from mae_dense.suite.tables import leaderboard_records
from mae_dense.suite.tasks import TASKS


def _cell(backbone: str, task: str, seed: int, metrics: dict, **kw) -> dict:
    return dict(
        backbone=backbone,
        checkpoint_sha256=kw.pop('sha', f'sha-{backbone}'),
        model='ViT-B',
        task=task,
        config=f'{task}.py',
        config_hash=kw.pop('config_hash', f'hash-{task}'),
        seed=seed,
        status=kw.pop('status', 'done'),
        metrics=metrics,
        recipe=dict(
            world_size=8,
            per_gpu_batch=2,
            accumulative_counts=1,
            effective_batch=16,
            lr=1e-4,
            iterations=160000,
            precision='float16',
        ),
        versions={'torch': '2.14.1'},
        git_commit='abc',
        **kw,
    )


def test_store_counts_a_cell_once_and_a_success_replaces_a_failure(tmp_path):
    store = ResultStore(tmp_path / 'r.sqlite')
    assert store.add(_cell('a', 'ade20k', 0, {}, status='failed', reason='out of memory'))
    assert store.add(_cell('a', 'ade20k', 0, {'mIoU': 48.0}))  # the rerun that finished
    assert not store.add(_cell('a', 'ade20k', 0, {'mIoU': 47.0}))  # the same cell again: not counted twice
    assert not store.add(
        _cell('a', 'ade20k', 0, {}, status='failed', reason='later')
    )  # never replaces a result
    assert store.add(_cell('a', 'ade20k', 1, {'mIoU': 49.0}))  # another seed
    assert store.add(_cell('a', 'ade20k', 0, {'mIoU': 40.0}, config_hash='other-recipe'))
    cells = store.cells()
    assert [(c['seed'], c['config_hash'], c['metrics']) for c in cells] == [
        (0, 'hash-ade20k', {'mIoU': 48.0}),
        (1, 'hash-ade20k', {'mIoU': 49.0}),
        (0, 'other-recipe', {'mIoU': 40.0}),
    ]
    assert store.find('sha-a', 'ade20k', 'hash-ade20k', 1)['metrics'] == {'mIoU': 49.0}
    (tmp_path / 'junk.sqlite').write_text('not a database, just text ' * 100)
    with pytest.raises(Exception, match='junk.sqlite: not a results store'):
        ResultStore(tmp_path / 'junk.sqlite')


def test_missing_metric_is_a_dash_with_its_reason_never_nan():
    metrics, missing = task_metrics(
        TASKS['coco'], {'test_ss': {'coco/bbox_mAP': 0.25, 'coco/segm_mAP': float('nan')}}
    )
    assert metrics == {'box AP': 25.0} and missing == {'mask AP': 'the test returned no coco/segm_mAP (nan)'}
    cells = [
        _cell('a', 'coco', 0, metrics, missing=missing),
        _cell('a', 'coco', 1, {'box AP': 27.0}, missing={'mask AP': 'the test returned no coco/segm_mAP'}),
    ]
    records = {r['metric']: r for r in leaderboard_records(cells)}
    assert (
        records['box AP']['value'] == 26.0
        and records['box AP']['std'] == pytest.approx(2**0.5)
        and records['box AP']['n'] == 2
    )
    assert records['mask AP']['status'] == 'missing' and records['mask AP']['value'] is None
    board = matrix(list(records.values()), references=())
    row = board.rows[0]
    assert row[board.headers.index('COCO box AP')] == '26.00 ± 1.41 (n=2)'
    assert row[board.headers.index('COCO mask AP')] == '— (1)'
    assert board.notes == ['a / COCO mask AP: the test returned no coco/segm_mAP (nan)']
    assert 'nan' not in ' '.join(row)


def test_curves_show_every_seed_at_their_iterations():
    runs = [
        _cell('a', 'coco', seed, {}, curves={'loss': [[50, 2.0], [100, 1.5]], 'box AP': [[200, 10.0 + seed]]})
        for seed in range(3)
    ] + [_cell('b', 'coco', 0, {}, curves={'loss': [[50, 2.5]], 'box AP': [[200, 3.0]]})]
    fig = curves_figure('coco', runs)
    loss_ax, metric_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ['a seed 0', 'a seed 1', 'a seed 2', 'b seed 0']
    assert [list(line.get_xdata()) for line in metric_ax.lines] == [
        [200]
    ] * 4  # evaluated at 200, drawn there
    assert [list(line.get_ydata()) for line in metric_ax.lines] == [[10.0], [11.0], [12.0], [3.0]]


def _synthetic_store(tmp_path: Path) -> ResultStore:
    store = ResultStore(tmp_path / 'r.sqlite')
    curves = {'loss': [[10, 3.0], [20, 2.0]], 'mIoU': [[20, 30.0]]}
    for seed, (miou, ms) in enumerate(((45.0, 46.0), (46.0, 47.5))):
        store.add(
            _cell(
                'mae-800ep', 'ade20k', seed, {'mIoU': miou, 'mIoU ms+flip': ms, 'aAcc': 80.0}, curves=curves
            )
        )
        store.add(
            _cell('scratch', 'ade20k', seed, {'mIoU': 20.0 + seed, 'aAcc': 60.0}, sha='random', curves=curves)
        )
    store.add(_cell('mae-800ep', 'probe', 0, {'mIoU': 30.5, 'aAcc': 70.0}, mode='fast'))
    store.add(
        _cell(
            'scratch',
            'coco',
            0,
            {},
            sha='random',
            status='failed',
            reason='training failed: CUDA out of memory',
        )
    )
    store.add(_cell('mae-800ep', 'coco', 0, {'box AP': 50.1, 'mask AP': 44.0}))
    rgb = Image.fromarray(np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3))
    store.add_figure(
        'mae-800ep', 'sha-mae-800ep', 'qualitative', panel_png([('one', [np.asarray(rgb)] * 3)], 't')
    )
    return store


def test_report_matrix_json_and_figures(tmp_path):
    md = write_report(_synthetic_store(tmp_path), tmp_path / 'out', 'synthetic')
    text = md.read_text()
    header = next(line for line in text.splitlines() if line.startswith('| backbone | model |'))
    assert header.split(' | ')[2:6] == [
        'ADE20K mIoU',
        'ADE20K mIoU ms+flip',
        'ADE20K aAcc',
        'ADE20K linear probe mIoU (fast)',
    ]
    row = next(line for line in text.splitlines() if line.startswith('| mae-800ep |')).split(' | ')
    assert row[1:6] == ['ViT-B', '45.50 ± 0.71 (n=2)', '46.75 ± 1.06 (n=2)', '80.00 ± 0.00 (n=2)', '30.50']
    scratch = next(line for line in text.splitlines() if line.startswith('| scratch |'))
    assert '| failed (1) | failed (1) |' in scratch  # COCO box and mask AP
    assert '(1) scratch / COCO / seed 0: training failed: CUDA out of memory' in text
    assert '| published: MAE, MAE paper (Table 5) | ViT-B | 48.10 (' in text  # no card here: named
    board = json.loads((tmp_path / 'out/leaderboard.json').read_text())
    rec = next(r for r in board['results'] if r['backbone'] == 'mae-800ep' and r['metric'] == 'mIoU ms+flip')
    assert {k: rec[k] for k in ('benchmark', 'value', 'n', 'config_hash', 'status')} == dict(
        benchmark='ADE20K', value=46.75, n=2, config_hash='hash-ade20k', status='done'
    )
    assert rec['std'] == pytest.approx(1.0607, abs=1e-4)
    probe = next(
        r for r in board['results'] if r['benchmark'] == 'ADE20K linear probe' and r['metric'] == 'mIoU'
    )
    assert probe['mode'] == 'fast'
    out = tmp_path / 'out'
    for name in board['figures']:
        with Image.open(out / name) as im:
            assert im.width > 100 and im.height > 100, name
    assert {'bars_ADE20K.png', 'bars_COCO.png', 'curves_ade20k.png', 'qualitative_mae-800ep.png'} <= set(
        board['figures']
    )


def test_qualitative_rows_from_test_outputs(tmp_path):
    from mae_dense.data import generate_synthetic_ade20k, generate_synthetic_coco

    ade = generate_synthetic_ade20k(tmp_path / 'ade', num_train=1, num_val=2, seed=0)
    preds = tmp_path / 'labels'
    preds.mkdir()
    for gt in sorted((ade / 'annotations/validation').glob('*.png')):
        shutil.copy(gt, preds / gt.name)  # a perfect prediction: both columns must be the same picture
    rows = segmentation_rows(preds, ade / 'images/validation', ade / 'annotations/validation', count=1)
    assert len(rows) == 1 and np.array_equal(rows[0][1][1], rows[0][1][2]) and rows[0][1][1].any()

    coco = generate_synthetic_coco(tmp_path / 'coco', num_train=1, num_val=2, seed=0)
    ann = json.loads((coco / 'annotations/instances_val2017.json').read_text())
    first = ann['images'][0]['id']
    mine = [a for a in ann['annotations'] if a['image_id'] == first]
    import pycocotools.mask as mask_utils

    h, w = ann['images'][0]['height'], ann['images'][0]['width']
    results = []
    for a in mine:
        seg = a['segmentation']
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w)) if isinstance(seg, list) else seg
        if isinstance(rle.get('counts'), list):
            rle = mask_utils.frPyObjects(rle, h, w)
        rle['counts'] = rle['counts'].decode() if isinstance(rle['counts'], bytes) else rle['counts']
        results.append(
            dict(image_id=first, category_id=a['category_id'], bbox=a['bbox'], score=0.9, segmentation=rle)
        )
    (tmp_path / 'pred.segm.json').write_text(json.dumps(results))
    rows = detection_rows(
        coco / 'annotations/instances_val2017.json', coco / 'val2017', tmp_path / 'pred', count=2
    )
    assert [r[0].split(' (')[1] for r in rows] == ['score >= 0.3)', 'no detection)']
    image, gt, pred = rows[0][1]
    masks = mask_utils.decode(results[0]['segmentation']).astype(bool)
    assert not np.array_equal(image[masks], pred[masks])  # the detection is drawn over its pixels
    assert np.array_equal(rows[1][1][0], rows[1][1][2])  # nothing detected, nothing drawn
    Image.open(__import__('io').BytesIO(panel_png(rows, 'coco'))).verify()


_CHROMIUM = next(
    (shutil.which(n) for n in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(n)), None
)
# After load: the rows of every table, each image's natural width, and the first column of the matrix
# after a click on its 'ADE20K mIoU' header (sorted by value), written where --dump-dom shows them.
_CHECK = """<script>
window.addEventListener('load', () => {
  const rows = {};
  document.querySelectorAll('table').forEach(t => { rows[t.id] = t.tBodies[0].rows.length; });
  const widths = Array.from(document.images).map(i => i.naturalWidth);
  const m = document.getElementById('matrix');
  const col = Array.from(m.tHead.rows[0].cells).findIndex(th => th.textContent === 'ADE20K mIoU');
  m.tHead.rows[0].cells[col].click();
  const sorted = Array.from(m.tBodies[0].rows).map(r => r.cells[col].textContent);
  document.body.setAttribute('data-check', JSON.stringify({rows, widths, sorted}));
});
</script></body>"""


@pytest.mark.skipif(
    _CHROMIUM is None, reason='no headless Chromium (make setup installs the Debian package chromium)'
)
def test_html_report_in_headless_chromium(tmp_path):
    write_report(_synthetic_store(tmp_path), tmp_path / 'out', 'synthetic')
    page = (tmp_path / 'out/leaderboard.html').read_text()
    assert 'src="data:image/png;base64,' in page and 'src="http' not in page  # self-contained
    (tmp_path / 'check.html').write_text(page.replace('</body>', _CHECK))
    r = subprocess.run(
        [
            _CHROMIUM,
            '--headless',
            '--no-sandbox',
            '--disable-gpu',
            '--disable-background-networking',
            '--disable-component-update',
            '--disable-sync',
            '--no-first-run',
            f'--user-data-dir={tmp_path / "profile"}',
            '--dump-dom',
            (tmp_path / 'check.html').as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r'data-check="([^"]*)"', r.stdout)
    assert found, r.stderr[-2000:]
    check = json.loads(found.group(1).replace('&quot;', '"'))
    md = (tmp_path / 'out/leaderboard.md').read_text().split('\n## ')
    md_rows = {
        s.split('\n', 1)[0]: sum(1 for line in s.splitlines() if line.startswith('| ')) - 1 for s in md[1:]
    }
    assert (
        check['rows']['matrix']
        == md_rows['Leaderboard (mean ± std over seeds; published rows below the backbones)']
    )
    assert check['rows']['published'] == md_rows['Published numbers']
    assert check['rows']['recipes'] == md_rows['Recipes (effective)']
    assert check['rows']['results'] == len(
        json.loads((tmp_path / 'out/leaderboard.json').read_text())['results']
    )
    figures = json.loads((tmp_path / 'out/leaderboard.json').read_text())['figures']
    assert len(check['widths']) == len(figures) and all(w > 0 for w in check['widths'])  # no broken image
    numbers = [float(s.split()[0]) for s in check['sorted'] if s]
    assert numbers == sorted(numbers) and len(numbers) >= 4  # the click sorted the column by value


def test_the_table_of_tasks_orders_columns_and_marks_lower_is_better(monkeypatch):
    """Column order and direction come from the table of tasks: a task with an error metric (e.g. depth
    RMSE) gets '(lower is better)' in its column label, after the benchmarks it is placed behind."""
    from mae_dense.suite.tasks import Metric, Task

    toy = Task(
        name='toydepth',
        benchmark='Toy depth',
        kind='probe',
        weights_key='model.pretrained',
        metrics=(
            Metric('RMSE', 'probe', 'metrics.rmse', higher_is_better=False),
            Metric('d1', 'probe', 'metrics.d1'),
        ),
        column=-1,  # before every shipped benchmark
    )
    monkeypatch.setitem(TASKS, 'toydepth', toy)
    metrics, missing = task_metrics(toy, {'probe': {'metrics': {'rmse': 0.5, 'd1': None}}})
    assert metrics == {'RMSE': 0.5} and missing == {'d1': 'the probe returned no d1'}
    cells = [_cell('a', 'toydepth', 0, {'RMSE': 0.5, 'd1': 80.0}), _cell('a', 'ade20k', 0, {'mIoU': 40.0})]
    headers = matrix(leaderboard_records(cells), references=()).headers
    assert headers == ['backbone', 'model', 'Toy depth RMSE (lower is better)', 'Toy depth d1', 'ADE20K mIoU']
