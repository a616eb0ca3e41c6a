"""Small synthetic data sets in the real on-disk formats, for the demo and the tests.

One generator per data set, each deterministic given its seed, and one command line::

    python -m mae_dense.data.synthetic ade20k -o data/demo/ade/ADEChallengeData2016 --num-train 48 --num-val 8
    python -m mae_dense.data.synthetic coco -o data/demo/coco --num-train 24 --num-val 6
    python -m mae_dense.data.synthetic image-folder -o data/demo/pretrain --num-train 64
    python -m mae_dense.data.synthetic nyu -o data/demo/nyu --num-train 32 --num-val 8

* ADE20K (``ADEChallengeData2016``): :mod:`.ade20k`;
* COCO 2017 instances: :mod:`.coco`;
* an ImageNet-style image folder: :mod:`.image_folder`;
* NYU Depth v2 (images and 16-bit depth PNGs; ``--num-val`` is its test split): :mod:`.nyu`.

The checkers that accept or refuse a data set live with its format (:mod:`mae_dense.data.ade20k`,
:mod:`mae_dense.data.coco`, :mod:`mae_dense.data.image_folder`); the command runs them on what it wrote.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ...errors import DataError
from .. import ade20k as ade20k_format
from .. import coco as coco_format
from .. import nyu as nyu_format
from ..image_folder import list_image_folder
from .ade20k import generate_synthetic_ade20k
from .coco import generate_synthetic_coco
from .image_folder import generate_synthetic_image_folder
from .nyu import generate_synthetic_nyu

__all__ = [
    'generate_synthetic_ade20k',
    'generate_synthetic_coco',
    'generate_synthetic_image_folder',
    'generate_synthetic_nyu',
    'main',
]


_DEFAULT_OUT = {
    'ade20k': ade20k_format.DEFAULT_DATA_ROOT,
    'coco': coco_format.DEFAULT_DATA_ROOT,
    'image-folder': 'data/imagenet',
    'nyu': nyu_format.DEFAULT_DATA_ROOT,
}


def _write(kind: str, out: Path, num_train: int, num_val: int, seed: int) -> str:
    """Generate one data set, check it with its format's checker, and say what was written."""
    if kind == 'ade20k':
        root = generate_synthetic_ade20k(out, num_train=num_train, num_val=num_val, seed=seed)
        counts = {s: len(ade20k_format.check_ade20k(root, s)) for s in ade20k_format.SPLITS}
        return f'wrote synthetic ADE20K to {root}: ' + ', '.join(f'{n} {s}' for s, n in counts.items())
    if kind == 'coco':
        root = generate_synthetic_coco(out, num_train=num_train, num_val=num_val, seed=seed)
        stats = {s: coco_format.check_coco(root, s) for s in coco_format.SPLITS}
        return f'wrote synthetic COCO to {root}: ' + '; '.join(
            f'{s} ' + ', '.join(f'{v} {k}' for k, v in st.items()) for s, st in stats.items()
        )
    if kind == 'nyu':
        root = generate_synthetic_nyu(out, num_train=num_train, num_test=num_val, seed=seed)
        counts = {s: len(nyu_format.check_nyu(root, s)) for s in nyu_format.SPLITS}
        return f'wrote synthetic NYU Depth v2 to {root}: ' + ', '.join(f'{n} {s}' for s, n in counts.items())
    classes = 4
    root = generate_synthetic_image_folder(
        out, num_classes=classes, images_per_class=max(1, math.ceil(num_train / classes)), seed=seed
    )
    files, _, names = list_image_folder(root / 'train')
    return f'wrote a synthetic image folder to {root / "train"}: {len(files)} images in {len(names)} classes'


def main(argv: list[str] | None = None, kind: str | None = None, prog: str | None = None) -> int:
    """``python -m mae_dense.data.synthetic {ade20k,coco,image-folder,nyu} [-o OUT] [--num-train N] ...``."""
    parser = argparse.ArgumentParser(
        prog=prog, description='Write a small synthetic data set in its real format.'
    )
    if kind is None:
        parser.add_argument('kind', choices=tuple(_DEFAULT_OUT), help='which data set')
    parser.add_argument('-o', '--out', type=Path, help="output root (default: the configs' data root)")
    parser.add_argument('--num-train', type=int, default=8, help='training images (default: 8)')
    parser.add_argument(
        '--num-val', type=int, default=4, help='validation images (default: 4; none for image-folder)'
    )
    parser.add_argument('--seed', type=int, default=0, help='seed of everything drawn (default: 0)')
    args = parser.parse_args(argv)
    kind = kind or args.kind
    try:
        print(_write(kind, args.out or Path(_DEFAULT_OUT[kind]), args.num_train, args.num_val, args.seed))
    except DataError as exc:  # the data layer stays free of the tools' modules
        print(f'error: {exc}', file=sys.stderr)
        return 1
    return 0
