"""``python -m controlsamp``: the command line (what torchrun starts in each process of a multi-process run)."""
import sys

from .cli import main

sys.exit(main())
