"""What a requeued attempt checks before it starts anything (SLURM_RESTART_COUNT > 0).

1. How the previous attempt ended: its result.json, or, when its supervisor left none or only the
   provisional SIGTERM record (its node was lost), Slurm's accounting (previous_run).
2. Steps of an earlier run still alive in this one: when the batch node fails, Slurm 22.05 sometimes
   requeues only het component 0, and the old trainer step keeps training into the shared output_dir
   while the new one waits for its node. Nothing of this attempt runs yet, so every step but
   batch/extern is stale and is cancelled (cancel_stale_steps).
3. Whether to run at all: not past cluster.max_requeues requeues of any origin, and not after a node
   failure unless cluster.requeue_on_node_failure (restart_ending); the previous supervisor could not
   stop the requeue itself if its own node was the one lost.
"""

from __future__ import annotations

from typing import Callable, Optional

from launcher.jobfolder.records import Cause, Result
from launcher.plan.plan import Policies
from launcher.supervisor.clock import Clock
from launcher.supervisor.verdicts import End, failed

STALE_WAIT_S = 60.0  # how long cancelled stale steps are waited for


def previous_run(attempt: int, before: Optional[Result], runs: list[dict[str, str]]) -> tuple[str, bool]:
    """(what ended the previous attempt, whether it was a node failure). `before`: its result.json;
    `runs`: accounting's earlier runs of the job (own_job.previous_runs), oldest first."""
    if before is not None and not before.provisional:
        return f"attempt {attempt - 1} ended {before.state.value}: {before.summary}", before.cause is Cause.NODE_FAILURE
    earlier = [r for r in runs if r["State"].split()[0] not in ("RUNNING", "PENDING")]
    if earlier:
        last = earlier[-1]
        state = last["State"].split()[0]
        return (f"attempt {attempt - 1} ended {state} on {last['NodeList']} by Slurm's accounting "
                f"(its supervisor left no result: its node was lost)"), state == "NODE_FAIL"
    return f"attempt {attempt - 1} left no result and accounting has no earlier run", False


def restart_ending(restarts: int, previous: str, node_failure: bool, policies: Policies) -> Optional[End]:
    """FAILED when this run must not happen; None: go on."""
    limit = policies.max_requeues
    if restarts > limit:
        return failed(Cause.MAX_REQUEUES, f"Slurm started this job a {restarts + 1}th time, but "
                                          f"cluster.max_requeues={limit}; {previous}")
    if node_failure and not policies.requeue_on_node_failure:
        return failed(Cause.NODE_FAILURE, f"{previous}; not running again after a node failure "
                                          f"(cluster.requeue_on_node_failure=false)")
    return None


def cancel_stale_steps(slurm, clock: Clock, log: Callable[[str], None], wait_s: float = STALE_WAIT_S) -> list[str]:
    """Cancel the job's steps other than batch/extern and wait (bounded) until they are gone; the
    steps that were cancelled. `slurm`: an own_job.OwnJob (or a fake)."""
    info = slurm.info()
    stale = slurm.running_steps(info.component_ids) if info else None
    if not stale:
        return []
    log(f"cancelling steps left from the previous run: {', '.join(stale)}")
    slurm.cancel_steps(stale)
    deadline = clock.monotonic() + wait_s
    while clock.monotonic() < deadline and slurm.running_steps(info.component_ids):
        clock.sleep(1.0)
    left = slurm.running_steps(info.component_ids)
    log(f"steps still present after {wait_s:.0f} s: {', '.join(left)}" if left else "stale steps gone")
    return stale
