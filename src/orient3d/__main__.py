"""``python -m orient3d`` is ``orient3d`` (also under ``torchrun``)."""

import sys

from orient3d.cli import main

sys.exit(main())
