"""`python -m launcher.train [--preflight[=WHY]]`: the trainer entry point (launcher/train/entry.py)."""

import sys

from launcher.train.entry import main

sys.exit(main())
