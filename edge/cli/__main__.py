"""``python -m edge.cli``: the same as the ``drsn-edge`` console script."""

import sys

from edge.cli import main

sys.exit(main())
