#!/usr/bin/env python
"""Write a small synthetic ADE20K in the ADEChallengeData2016 layout (``python -m mae_dense.data.synthetic ade20k``).

Usage: python tools/dataset_converters/make_synthetic_ade20k.py [-o data/ade/ADEChallengeData2016]
       [--num-train N] [--num-val N] [--seed S]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mae_dense.data.synthetic import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main(kind='ade20k', prog='make_synthetic_ade20k.py'))
