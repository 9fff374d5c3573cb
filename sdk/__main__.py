"""``python -m udrl`` is the ``udrl`` command (handy under ``torchrun``)."""

import sys

from .cli import main

sys.exit(main())
