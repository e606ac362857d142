"""``python -m dqnbench`` runs the CLI."""

import sys

from dqnbench.cli import main

sys.exit(main())
