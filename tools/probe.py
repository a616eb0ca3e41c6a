#!/usr/bin/env python
"""OpenMMLab-style entry point; the logic is mae_dense.cli.probe."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mae_dense.cli.probe import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
