#!/usr/bin/env python
"""MAE reconstructions as a PNG grid: original | masked | reconstruction | reconstruction + visible.

Usage: python tools/visualize_reconstruction.py CKPT IMAGES... --out grid.png [--arch {base,large,huge}]
       [--mask-ratio 0.75] [--seed 0] [--img-size 224] [--norm-pix] [--device cpu]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mae_dense.cli.reconstruct import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main(prog='visualize_reconstruction.py'))
