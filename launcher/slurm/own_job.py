"""The supervisor's view of its own Slurm job: state, nodes, earlier runs; requeue, cancel, and a signal to
a step (a hung component asked for its stacks).

Every call is bounded (a supervisor in Slurm's KillWait window has seconds, not minutes) and
returns None (or nothing found) rather than raising when Slurm does not answer: a missing answer
must never turn into a wrong decision. Commands that change the job (requeue, cancel) retry
transient failures (slurmctld restarting, launcher/slurm/transient.py) until a deadline.
`OwnJob` binds these calls to one job id: the supervisor talks to Slurm only through it, so tests
hand it a fake. Standard library only.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import time
from dataclasses import dataclass, field
from typing import Optional

from launcher.slurm.transient import is_transient
from launcher.walltime import parse_walltime

# node states that mean "this node failed" (DRAIN alone does not: running jobs keep running)
FAILED_NODE = re.compile(r"DOWN|FAIL|NOT_RESPONDING|POWER(ED|ING)?_DOWN|REBOOT", re.I)
REQUEUE_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING"}
_FIELD = r"(?:^|\s){}=(\S*)"

FailedNodes = dict[str, tuple[str, str]]  # {node: (State, Reason)}


@dataclass
class JobInfo:
    """`scontrol show job -o` of every het component, reduced to what the supervisor decides on."""

    states: list[str]
    restarts: int
    component_ids: list[str] = field(default_factory=list)  # het components' own job ids (leader first)
    end_time: Optional[float] = None  # epoch seconds: walltime end, or preemption GraceTime end
    preempt_time: Optional[float] = None  # set once Slurm selected the job for preemption
    nodes: list[str] = field(default_factory=list)
    start_time: Optional[float] = None
    time_limit_s: Optional[int] = None

    def at_walltime(self, now: float) -> bool:
        """The run ended because its time limit came (a cancel or requeue sets EndTime earlier);
        `now` in epoch seconds."""
        if self.start_time is None or self.time_limit_s is None or self.end_time is None:
            return False
        return self.end_time >= self.start_time + self.time_limit_s - 5 and now >= self.end_time - 5

    @property
    def requeued(self) -> bool:
        return any(s in REQUEUE_STATES for s in self.states)

    @property
    def state(self) -> str:
        return ",".join(sorted(set(self.states)))


def _run(argv: list[str], timeout_s: float) -> Optional[subprocess.CompletedProcess]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _first(name: str, line: str) -> Optional[str]:
    # the first occurrence: a free-text field (Comment=...) later on the line cannot spoof it
    match = re.search(_FIELD.format(re.escape(name)), line)
    return match.group(1) if match else None


def _epoch(text: Optional[str]) -> Optional[float]:
    if not text or text in ("None", "Unknown", "N/A"):
        return None
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def parse_job(text: str) -> Optional[JobInfo]:
    lines = [line for line in text.splitlines() if line.startswith("JobId=")]
    if not lines:
        return None
    states, nodes, restarts, ends, preempts, ids = [], [], 0, [], [], []
    for line in lines:
        ids.append(_first("JobId", line) or "")
        states.append(_first("JobState", line) or "UNKNOWN")
        restarts = max(restarts, int(_first("Restarts", line) or 0))
        ends.append(_epoch(_first("EndTime", line)))
        preempts.append(_epoch(_first("PreemptTime", line)))
        node_list = _first("NodeList", line)
        if node_list and node_list != "(null)":
            nodes.append(node_list)
    start = _epoch(_first("StartTime", lines[0]))
    try:
        limit = parse_walltime(_first("TimeLimit", lines[0]) or "")
    except ValueError:
        limit = None  # UNLIMITED
    known_ends = [e for e in ends if e is not None]
    known_preempts = [p for p in preempts if p is not None]
    return JobInfo(states=states, restarts=restarts, component_ids=[i for i in ids if i],
                   end_time=min(known_ends) if known_ends else None,
                   preempt_time=min(known_preempts) if known_preempts else None, nodes=nodes,
                   start_time=start, time_limit_s=limit)


def job_info(job_id: str, timeout_s: float = 5.0) -> Optional[JobInfo]:
    out = _run(["scontrol", "show", "job", "-o", str(job_id)], timeout_s)
    if out is None or out.returncode != 0:
        return None
    return parse_job(out.stdout)


def parse_nodes(text: str) -> FailedNodes:
    """`scontrol show node -o` -> {node: (State, Reason)}."""
    found = {}
    for line in text.splitlines():
        name = _first("NodeName", line)
        if not name:
            continue
        reason = ""
        if " Reason=" in line:
            reason = line.split(" Reason=", 1)[1].split(" [", 1)[0].strip()
        found[name] = (_first("State", line) or "UNKNOWN", reason)
    return found


def node_states(node_lists: list[str], timeout_s: float = 5.0) -> FailedNodes:
    if not node_lists:
        return {}
    out = _run(["scontrol", "show", "node", "-o", ",".join(node_lists)], timeout_s)
    if out is None or out.returncode != 0:
        return {}
    return parse_nodes(out.stdout)


def failed_nodes(node_lists: list[str], timeout_s: float = 5.0) -> FailedNodes:
    """The job's nodes that Slurm considers failed (DOWN, FAIL, NOT_RESPONDING ...)."""
    return {n: s for n, s in node_states(node_lists, timeout_s).items() if FAILED_NODE.search(s[0])}


def describe_nodes(failed: FailedNodes) -> str:
    return ", ".join(f"{n} ({state}{': ' + reason if reason else ''})" for n, (state, reason) in sorted(failed.items()))


def previous_runs(job_id: str, timeout_s: float = 10.0) -> list[dict[str, str]]:
    """Earlier runs of this job id from accounting (`sacct -D`: requeued runs keep their rows),
    oldest first; each {"JobID", "State", "NodeList", "Start", "End"} of het component +0 or the job."""
    out = _run(["sacct", "-D", "-X", "-n", "-P", "-o", "JobID,State,NodeList,Start,End", "-j", str(job_id)],
               timeout_s)
    if out is None or out.returncode != 0:
        return []
    rows = []
    for line in out.stdout.splitlines():
        parts = line.split("|")
        if len(parts) == 5 and parts[0] in (str(job_id), f"{job_id}+0"):
            rows.append(dict(zip(("JobID", "State", "NodeList", "Start", "End"), parts)))
    return rows


def _retrying(argv: list[str], deadline: float, what: str) -> tuple[bool, str]:
    """Run argv until it succeeds, fails permanently, or the deadline (time.monotonic()) passes; (ok, message)."""
    delay = 1.0
    while True:
        left = deadline - time.monotonic()
        out = _run(argv, max(1.0, min(30.0, left)))
        if out is not None and out.returncode == 0:
            return True, (out.stdout + out.stderr).strip()
        message = "timed out" if out is None else (out.stderr or out.stdout).strip() or f"exit {out.returncode}"
        if not (out is None or is_transient(message)):
            return False, f"{what} failed: {message}"
        if time.monotonic() + delay >= deadline:
            return False, f"{what} failed until the deadline (slurmctld unreachable?): {message}"
        time.sleep(delay)
        delay = min(delay * 2, 10.0)


def requeue(job_id: str, deadline: float) -> tuple[bool, str]:
    return _retrying(["scontrol", "requeue", str(job_id)], deadline, "scontrol requeue")


def cancel(job_id: str, deadline: float) -> tuple[bool, str]:
    return _retrying(["scancel", str(job_id)], deadline, "scancel")


def running_steps(component_ids: list[str], timeout_s: float = 10.0) -> Optional[list[str]]:
    """Step ids (`1491.1`) of the job's components other than the batch/extern steps; None if unknown."""
    if not component_ids:
        return None
    out = _run(["squeue", "-h", "-s", "-j", ",".join(component_ids), "-o", "%i"], timeout_s)
    if out is None or out.returncode != 0:
        return None
    return [s for s in out.stdout.split() if s.rsplit(".", 1)[-1].isdigit()]


def cancel_steps(step_ids: list[str], timeout_s: float = 10.0) -> bool:
    out = _run(["scancel", *step_ids], timeout_s)
    return out is not None and out.returncode == 0


def steps_named(component_ids: list[str], name: str, timeout_s: float = 3.0) -> list[str]:
    """Step ids of the job's steps called `name` (srun --job-name: <job>-<component>); [] if unknown."""
    if not component_ids:
        return []
    out = _run(["squeue", "-h", "-s", "-j", ",".join(component_ids), "-o", "%i %j"], timeout_s)
    if out is None or out.returncode != 0:
        return []
    return [line.split()[0] for line in out.stdout.splitlines() if line.split()[1:] == [name]]


def signal_steps(step_ids: list[str], signal_name: str, timeout_s: float = 3.0) -> bool:
    """`scancel --signal=<signal_name>` to each step: every process of the step gets it, on every node."""
    if not step_ids:
        return False
    out = _run(["scancel", f"--signal={signal_name}", *step_ids], timeout_s)
    return out is not None and out.returncode == 0


class OwnJob:
    """The calls above bound to one job id: what the supervisor asks Slurm about its own job.
    Deadlines are time.monotonic() values."""

    def __init__(self, job_id: str):
        self.job_id = str(job_id)

    def info(self, timeout_s: float = 5.0) -> Optional[JobInfo]:
        return job_info(self.job_id, timeout_s)

    def failed_nodes(self, node_lists: list[str], timeout_s: float = 5.0) -> FailedNodes:
        return failed_nodes(node_lists, timeout_s)

    def previous_runs(self, timeout_s: float = 10.0) -> list[dict[str, str]]:
        return previous_runs(self.job_id, timeout_s)

    def requeue(self, deadline: float) -> tuple[bool, str]:
        return requeue(self.job_id, deadline)

    def cancel(self, deadline: float) -> tuple[bool, str]:
        return cancel(self.job_id, deadline)

    def running_steps(self, component_ids: list[str]) -> Optional[list[str]]:
        return running_steps(component_ids)

    def cancel_steps(self, step_ids: list[str]) -> bool:
        return cancel_steps(step_ids)

    def signal_step(self, name: str, signal_name: str) -> list[str]:
        """Signal this job's steps called `name`; the step ids signalled ([] when none was found)."""
        info = self.info(2.0)
        ids = steps_named(info.component_ids, name) if info else []
        return ids if signal_steps(ids, signal_name) else []


__all__ = ["FAILED_NODE", "FailedNodes", "JobInfo", "OwnJob", "cancel", "cancel_steps", "describe_nodes",
           "failed_nodes", "job_info", "node_states", "parse_job", "parse_nodes", "previous_runs", "requeue",
           "running_steps", "signal_steps", "steps_named"]
