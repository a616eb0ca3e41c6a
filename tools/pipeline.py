#!/usr/bin/env python
"""``python tools/pipeline.py CONFIG``: the same as ``mae-dense pipeline CONFIG``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mae_dense.suite.commands import pipeline_main as main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
