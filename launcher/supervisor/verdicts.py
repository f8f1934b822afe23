"""What the supervisor's decision code answers: the values monitors, endings and restart checks return.

None means "nothing to do yet". An End says how the attempt ends and what the loop does on the way
out (stop both components, cancel a requeue Slurm made, add a component's log tail to the reason);
a component declared hung is diagnosed before it is stopped (launcher/supervisor/hangs.py);
a Restart asks for a step to be started again; Healthy and Event are milestones worth a log line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from launcher.jobfolder.records import Cause, State
from launcher.slurm.own_job import FailedNodes


@dataclass(frozen=True)
class End:
    state: State
    cause: Cause
    reason: str  # the result's first line
    stop_why: str = "job ended"  # "trainer stopped (<stop_why>)" in supervisor.log
    log: Optional[str] = None  # a line for supervisor.log before the components are stopped
    mark: Optional[str] = None  # the timings entry (result.json) that records when this was decided
    tail: Optional[str] = None  # the component whose log's last lines follow the reason
    stop_grace_s: Optional[float] = None  # None: cluster.stop_grace_s
    cancel_requeue: bool = False  # Slurm requeued the job but it must end here: scancel it
    diagnose: Optional[str] = None  # a component declared hung: its stacks, nvidia-smi and log tails are captured first

    @property
    def continues(self) -> bool:
        """The job runs again: no submitit result may be left behind."""
        return self.state is State.REQUEUED


def failed(cause: Cause, reason: str, **kwargs) -> End:
    return End(State.FAILED, cause, reason, **kwargs)


@dataclass(frozen=True)
class Restart:
    """Start the step again after delay_s: its srun could not reach slurmctld (the step never ran)."""

    component: str
    error: str  # srun's line
    delay_s: float


@dataclass(frozen=True)
class Healthy:
    url: str


@dataclass(frozen=True)
class Event:
    """A milestone: a log line, and the name under which its time goes into result.json's timings."""

    message: str
    mark: Optional[str] = None


@dataclass(frozen=True)
class NodeLost:
    """srun said a node of the step failed; Slurm has to be asked what it did about it."""

    nodes: FailedNodes
    rc: int  # the trainer step's exit code (srun says 0)


Verdict = Union[End, Restart, Healthy, Event, NodeLost, None]
