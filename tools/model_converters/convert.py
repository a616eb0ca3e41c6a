#!/usr/bin/env python
"""Any known ViT layout -> project, mmseg or timm layout (--to).

Usage: python tools/model_converters/convert.py SRC DST [--to {project,mmseg,timm}]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mae_dense.cli.convert import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main(prog='convert.py'))
