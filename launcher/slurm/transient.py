"""Which Slurm errors are transient (slurmctld busy, restarting or unreachable): worth another try.

One list for every caller: sbatch at submission, scontrol/scancel in the job, and srun when a step
could not be created. Anything else (a bad partition, account, QOS, an impossible request) is
permanent and reported as it is.
"""

from __future__ import annotations

import re
from typing import Optional

# the messages slurm's client commands print when they could not reach or hear back from slurmctld
_CONTROLLER_AWAY = (
    r"Unable to contact slurm controller|Unable to confirm allocation|Socket timed out|"
    r"Zero Bytes were transmitted|Transport endpoint is not connected|Transport endpoint|slurm_receive_msg|"
    r"Connection refused|Resource temporarily unavailable|temporarily unavailable|"
    r"temporarily unable to accept job|Slurm temporarily unable")

TRANSIENT = re.compile(_CONTROLLER_AWAY, re.I)
# srun's own error lines (`srun: error: ...`): the step never started
SRUN_TRANSIENT = re.compile(rf"^srun: error: .*({_CONTROLLER_AWAY})", re.M | re.I)


def is_transient(message: str) -> bool:
    return bool(TRANSIENT.search(message))


def srun_transient_line(output: str) -> Optional[str]:
    """The srun error line saying slurmctld did not answer, if the step's output has one."""
    match = SRUN_TRANSIENT.search(output)
    return match.group(0) if match else None
