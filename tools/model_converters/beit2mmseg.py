#!/usr/bin/env python
"""Official BEiT/MAE (or any known layout) -> mmseg MAE/BEiT backbone.

Usage: python tools/model_converters/beit2mmseg.py SRC DST
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mae_dense.cli.convert import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main(to='mmseg', prog='beit2mmseg.py'))
