"""`python -m launcher.train JOB_DIR [--preflight]`: the trainer entry point (see launcher/train/training.py)."""

import sys

from launcher.train.training import main

sys.exit(main())
