"""How Slurm's signals end an attempt, decided from what Slurm says (a JobInfo) and the time.

- USR2 (walltime near, or preemption with GraceTime): the checkpoint gets most of what is left of the
  run and the stop grace shrinks with it (usr2_budget), unless the trainer has trained nothing yet
  (nothing_to_save: still preparing, waiting for the server, or a preflight); then a requeue, unless
  cluster.max_requeues is reached (usr2_without_requeue, usr2_requeued).
- SIGTERM (Slurm ends the run now, KillWait until SIGKILL): requeued by Slurm, node failure (kept as a
  requeue only with cluster.requeue_on_node_failure), preemption that cancels, walltime, or a plain
  cancel (sigterm_ending).
- SIGINT, and any signal on the local backend: STOPPED.

Pure functions: no Slurm calls, no clock reads; `now` is epoch seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from launcher.jobfolder.progress import Heartbeat, TrainerPhase
from launcher.jobfolder.records import Cause, State
from launcher.plan.plan import Policies
from launcher.slurm.own_job import FailedNodes, JobInfo, describe_nodes
from launcher.supervisor.verdicts import End, failed

END_MARGIN_S = 5.0  # what USR2 handling keeps in hand before Slurm's end of the run
KILLWAIT_STOP_S = 1.0  # SIGTERM -> SIGKILL for the components inside Slurm's KillWait window


UNTRAINED = {p.value for p in (TrainerPhase.START, TrainerPhase.LOAD_DATA, TrainerPhase.LOAD_MODEL,
                               TrainerPhase.WAITING_FOR_SERVER, TrainerPhase.PREFLIGHT)}


def nothing_to_save(beat: Optional[Heartbeat]) -> bool:
    """A trainer without a heartbeat, still preparing or waiting for the server's address, or running the
    preflight has trained nothing: no checkpoint is asked of it."""
    return beat is None or beat.phase in UNTRAINED


@dataclass(frozen=True)
class Usr2Budget:
    cause: Cause  # WALLTIME or PREEMPTION
    end: float  # epoch seconds when Slurm ends this run
    left_s: float
    checkpoint_s: float  # how long the trainer's checkpoint is waited for
    stop_grace_s: float  # SIGTERM -> SIGKILL for the components afterwards

    @property
    def preempted(self) -> bool:
        return self.cause is Cause.PREEMPTION


def usr2_budget(now: float, info: Optional[JobInfo], policies: Policies) -> Usr2Budget:
    """What is left of the run (EndTime, or PreemptTime + GraceTime; signal_before_end_s when Slurm does
    not answer), split between the checkpoint, stopping and `scontrol requeue`."""
    preempted = bool(info and info.preempt_time)
    end = info.end_time if info and info.end_time else now + policies.signal_before_end_s
    left = end - now
    # a preemption GraceTime can be seconds: the checkpoint and the stop grace shrink with it
    checkpoint = max(1.0, min(policies.checkpoint_timeout_s, 0.6 * left, left - END_MARGIN_S))
    stop_grace = max(1.0, min(policies.stop_grace_s, 0.2 * left))
    return Usr2Budget(Cause.PREEMPTION if preempted else Cause.WALLTIME, end, left, checkpoint, stop_grace)


def saved(checkpoint: Optional[dict]) -> str:
    return f"checkpoint at step {checkpoint.get('step')} saved" if checkpoint else "no checkpoint saved"


def usr2_without_requeue(budget: Usr2Budget, checkpoint: Optional[dict], restarts: int,
                         max_requeues: int) -> Optional[End]:
    """FAILED when cluster.max_requeues is reached (the checkpoint stays for a manual resubmission);
    None: requeue."""
    if restarts < max_requeues:
        return None
    return failed(Cause.MAX_REQUEUES, f"{budget.cause.value}: {saved(checkpoint)}, but not requeued: "
                                      f"cluster.max_requeues={max_requeues} reached after {restarts} requeue(s)")


def usr2_requeued(budget: Usr2Budget, checkpoint: Optional[dict], restarts: int, max_requeues: int,
                  ok: bool, message: str) -> End:
    """After `scontrol requeue` (ok, its message)."""
    if not ok:
        return failed(budget.cause, f"{budget.cause.value}: {saved(checkpoint)}; {message}")
    return End(State.REQUEUED, budget.cause, f"{budget.cause.value}: {saved(checkpoint)}; requeued "
                                             f"(restart {restarts + 1} of at most {max_requeues})")


def requeued_by_slurm(info: Optional[JobInfo], restarts: int) -> bool:
    """Slurm has put the job back in the queue (or already started it again) past this run."""
    return info is not None and (info.requeued or info.restarts > restarts)


def with_accounting(info: Optional[JobInfo], restarts: int, failed_nodes: FailedNodes,
                    last_run_state: Optional[str]) -> FailedNodes:
    """A node that failed and came straight back (ReturnToService) leaves no trace in its state:
    accounting records the run that just ended as NODE_FAIL."""
    if failed_nodes or not requeued_by_slurm(info, restarts) or not (last_run_state or "").startswith("NODE_FAIL"):
        return failed_nodes
    return {"one of " + ",".join(info.nodes): ("NODE_FAIL in accounting", "")}


def node_failure_ending(failed_nodes: FailedNodes, requeued: bool, requeue_on_node_failure: bool,
                        **kwargs) -> End:
    """A lost node: Slurm has requeued the job (--requeue) or ended it NODE_FAIL. The requeue stands only
    with cluster.requeue_on_node_failure; otherwise it is cancelled and the job ends FAILED."""
    nodes = describe_nodes(failed_nodes) or "a node of the job"
    if requeued and requeue_on_node_failure:
        return End(State.REQUEUED, Cause.NODE_FAILURE, f"node failure: {nodes}; Slurm requeued the job "
                                                       f"(cluster.requeue_on_node_failure=true)", **kwargs)
    return failed(Cause.NODE_FAILURE, f"node failure: {nodes}; the job ends here "
                                      f"(cluster.requeue_on_node_failure=false)", cancel_requeue=requeued, **kwargs)


def sigterm_ending(info: Optional[JobInfo], restarts: int, failed_nodes: FailedNodes, now: float,
                   requeue_on_node_failure: bool) -> End:
    """Why Slurm sent SIGTERM. `failed_nodes`: the job's nodes Slurm calls failed, srun's node failures,
    and what with_accounting found."""
    why = dict(stop_why="SIGTERM from Slurm", stop_grace_s=KILLWAIT_STOP_S)
    requeued = requeued_by_slurm(info, restarts)
    if failed_nodes or (info and "NODE_FAIL" in info.states):
        return node_failure_ending(failed_nodes, requeued, requeue_on_node_failure, **why)
    if requeued:
        by = "preempted" if info.preempt_time else "scontrol requeue or preemption"
        return End(State.REQUEUED, Cause.REQUEUE, f"requeued by Slurm ({by}); the next attempt resumes from the "
                                                  f"last checkpoint in output_dir", **why)
    if info and info.preempt_time:
        return failed(Cause.PREEMPTION, "preempted, and the partition's PreemptMode cancels instead of requeueing",
                      **why)
    if info and info.at_walltime(now):
        return failed(Cause.WALLTIME, "walltime reached (cluster.time) before the USR2 checkpoint could finish", **why)
    state = info.state if info else "unknown (scontrol did not answer)"
    return End(State.STOPPED, Cause.CANCEL, f"stopped by SIGTERM (job state {state}: cancelled)", **why)


def stopped_by(signal_name: str) -> End:
    """SIGINT (Ctrl-C), or any signal on the local backend."""
    return End(State.STOPPED, Cause.CANCEL, f"stopped by {signal_name}", stop_why=f"{signal_name} received")


PROVISIONAL_REASON = "SIGTERM from Slurm; deciding why"
