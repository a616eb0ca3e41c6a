"""``python -m mae_dense.data.synthetic {ade20k,coco,image-folder} ...``."""

import sys

from . import main

sys.exit(main())
