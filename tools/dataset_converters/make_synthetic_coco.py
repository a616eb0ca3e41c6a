#!/usr/bin/env python
"""Write a small synthetic COCO 2017 instances set (``python -m mae_dense.data.synthetic coco``).

Usage: python tools/dataset_converters/make_synthetic_coco.py [-o data/coco] [--num-train N] [--num-val N] [--seed S]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mae_dense.data.synthetic import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main(kind='coco', prog='make_synthetic_coco.py'))
