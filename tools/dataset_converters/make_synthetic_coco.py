#!/usr/bin/env python
"""Write a small synthetic COCO 2017-format data set (real JPEGs, polygon and RLE masks, empty images).

Usage: python tools/dataset_converters/make_synthetic_coco.py [-o data/demo/coco] [--num-train N --num-val N --seed S]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mae_dense.data.coco import check_coco, generate_synthetic_coco  # noqa: E402

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('-o', '--out', default='data/demo/coco')
    parser.add_argument('--num-train', type=int, default=8)
    parser.add_argument('--num-val', type=int, default=4)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    root = generate_synthetic_coco(args.out, args.num_train, args.num_val, args.seed)
    for split in ('train', 'val'):
        print(f'{root} {split}: {check_coco(root, split)}')
