"""``python -m p2pdist.tracker [--config site.toml]`` is ``p2pdist server``."""

import sys

from p2pdist.tracker.cli import main

sys.exit(main())
