#!/usr/bin/env python
"""Write a tiny synthetic dataset in the exact ADEChallengeData2016 layout (for demos and tests).

Usage: python tools/dataset_converters/make_synthetic_ade20k.py [-o data/ade/ADEChallengeData2016]
       [--num-train N] [--num-val N] [--seed S]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mae_dense.data.ade20k import (  # noqa: E402
    DEFAULT_DATA_ROOT,
    DataError,
    check_ade20k,
    generate_synthetic_ade20k,
)


def main(argv: list[str] | None = None) -> int:
    """Generate, check and report; returns the exit status (1 with ``error: ...`` on bad arguments)."""
    parser = argparse.ArgumentParser(prog='make_synthetic_ade20k.py', description=__doc__.splitlines()[0])
    parser.add_argument(
        '-o', '--out', type=Path, default=Path(DEFAULT_DATA_ROOT), help=f'default: {DEFAULT_DATA_ROOT}'
    )
    parser.add_argument('--num-train', type=int, default=8)
    parser.add_argument('--num-val', type=int, default=4)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    try:
        root = generate_synthetic_ade20k(
            args.out, num_train=args.num_train, num_val=args.num_val, seed=args.seed
        )
        counts = ', '.join(f'{len(check_ade20k(root, s))} {s}' for s in ('training', 'validation'))
    except DataError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'wrote synthetic ADE20K to {root}: {counts} image/label pairs')
    return 0


if __name__ == '__main__':
    sys.exit(main())
