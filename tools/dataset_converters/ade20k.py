#!/usr/bin/env python
"""Extract the official ADEChallengeData2016.zip into the layout mmseg reads, and check it.

Usage: python tools/dataset_converters/ade20k.py ADEChallengeData2016.zip [-o data/ade]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mae_dense.data.ade20k import DataError, convert_official_zip  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the converter; returns the exit status (1 with a one-line ``error: ...`` on bad data)."""
    parser = argparse.ArgumentParser(prog='ade20k.py', description=__doc__.splitlines()[0])
    parser.add_argument('zip', type=Path, help='the official ADEChallengeData2016.zip')
    parser.add_argument('-o', '--out-dir', type=Path, default=Path('data/ade'), help='default: data/ade')
    args = parser.parse_args(argv)
    try:
        root = convert_official_zip(args.zip, args.out_dir)
    except DataError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    counts = ', '.join(
        f'{len(list((root / "images" / s).rglob("*.jpg")))} {s}' for s in ('training', 'validation')
    )
    print(f'wrote {root}: {counts} image/label pairs')
    return 0


if __name__ == '__main__':
    sys.exit(main())
