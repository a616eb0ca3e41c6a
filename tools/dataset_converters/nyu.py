#!/usr/bin/env python
"""Convert the official NYU Depth v2 labeled set (795 train / 654 test) into the layout mmseg reads, and check it.

Usage: python tools/dataset_converters/nyu.py nyu_depth_v2_labeled.mat splits.mat [-o data/nyu]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mae_dense.data.nyu import SPLITS, DataError, check_nyu, convert_labeled_mat  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the converter; returns the exit status (1 with a one-line ``error: ...`` on bad data)."""
    parser = argparse.ArgumentParser(prog='nyu.py', description=__doc__.splitlines()[0])
    parser.add_argument('labeled', type=Path, help='nyu_depth_v2_labeled.mat (MATLAB v7.3 / HDF5)')
    parser.add_argument('splits', type=Path, help='splits.mat (trainNdxs, testNdxs)')
    parser.add_argument('-o', '--out-dir', type=Path, default=Path('data/nyu'), help='default: data/nyu')
    args = parser.parse_args(argv)
    try:
        convert_labeled_mat(args.labeled, args.splits, args.out_dir)
        counts = {split: len(check_nyu(args.out_dir, split)) for split in SPLITS}
    except DataError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'wrote NYU Depth v2 to {args.out_dir}: ' + ', '.join(f'{n} {s}' for s, n in counts.items()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
