"""Where the user's own code lies in the job: `<job>/code/`, each file at its path relative to the launch
directory (launcher.jobfolder.frozen_code copies it there at submission). The plan names the frozen script
by that relative path, never by the job folder (which reaches the job as LAUNCHER_JOB_DIR only)."""

from __future__ import annotations

import os
from pathlib import Path

CODE_DIR = "code"  # <job>/code
OUTSIDE = "_outside"  # a script outside the launch directory: code/_outside/<name>
USER_SCRIPT = "launcher.train.user_script"  # the module that runs a frozen trainer.script


def frozen_name(script: str, launch_dir: str) -> str:
    """Where `script` lies under code/: its path relative to the launch directory, else _outside/<name>."""
    path, root = Path(os.path.abspath(os.path.expanduser(script))), Path(os.path.abspath(launch_dir))
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return f"{OUTSIDE}/{path.name}"


def user_script_of(execs: list[str]) -> list[str] | None:
    """[frozen script, *args] when the trainer command runs a user script, else None."""
    for i in range(len(execs) - 1):
        if execs[i] == "-m" and execs[i + 1] == USER_SCRIPT:
            return list(execs[i + 2:])
    return None
