"""``python -m p2pdist`` is the ``p2pdist`` command."""

import sys

from p2pdist.cli import main

sys.exit(main())
