#!/usr/bin/env python
"""mmpretrain/mmselfsup (or any known layout) -> timm/official MAE layout.

Usage: python tools/model_converters/mmcls2timm.py SRC DST
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mae_dense.cli.convert import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main(to='timm', prog='mmcls2timm.py'))
