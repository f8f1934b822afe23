"""`python -m launcher.jobs ...`: the jobs CLI (status, logs, cancel, resubmit, resume, report), kept at
this short name because messages and docs tell users to type it; the code is in launcher/cli/."""

import sys

from launcher.cli.jobs import main

if __name__ == "__main__":
    sys.exit(main())
