"""``python -m mae_dense ...``: the ``mae-dense`` command."""

import sys

from .commands import main

sys.exit(main())
