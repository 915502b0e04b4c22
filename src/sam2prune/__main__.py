"""``python -m sam2prune``: the console script, where no ``sam2prune`` executable is installed."""

import sys

from sam2prune.cli import main

sys.exit(main())
