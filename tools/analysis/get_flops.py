#!/usr/bin/env python
"""FLOPs and parameters of MAE's encoder (visible / all tokens) and decoder, against the paper's claims.

Usage: python tools/analysis/get_flops.py [--arch {base,large,huge}] [--mask-ratio 0.75] [--img-size 224]
       [--json OUT]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mae_dense.cli.flops import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main(prog='get_flops.py'))
