"""``python -m medsight`` is the ``medsight`` command."""

import sys

from medsight.cli import main

sys.exit(main())
