"""``python -m mae_dense ...``: the ``mae-dense`` command."""

import sys

from .cli.main import main

sys.exit(main())
