"""The batch step's entry point on Slurm: what submitit runs (SlurmEntry -> run_in_slurm_job), and
what the attempt's Result means for submitit's result file.

submitit's result file (`submitit/<id>_0_result.pkl`) belongs to the job id, which every run of a
requeued job shares. So a run that ends in a requeue (its own or Slurm's) leaves no result: it exits
without returning, and `job.result()` never reads attempt 1's outcome as the job's. A run that finds a
result left by an earlier run (a finished job requeued by hand) deletes it first, and a run that
learns the job was requeued past it (an older run whose node lost contact) leaves none either.
A run that ends COMPLETED returns a small dict; any other end raises JobFailed, so the job is FAILED.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Optional

from launcher.jobfolder.names import JOB_DIR_ENV
from launcher.jobfolder.records import Cause, State
from launcher.slurm.own_job import job_info

LEAVE_WAIT_S = 10.0  # how long a run that leaves no result waits for Slurm's SIGTERM of the requeue


class JobFailed(RuntimeError):
    """The job ended FAILED (or STOPPED); the message is the reason (also in result.json and supervisor.log)."""

    def __init__(self, message: str, cause: Cause = Cause.UNKNOWN):
        super().__init__(message)
        self.cause = cause


def _stale_result_pickle() -> Optional[Path]:
    """submitit's result file of this job (shared by every run of a requeued job id)."""
    folder, job_id = os.environ.get("SUBMITIT_FOLDER"), os.environ.get("SLURM_JOB_ID")
    if not folder or not job_id:
        return None
    return Path(folder.replace("%j", job_id)) / f"{job_id}_0_result.pkl"


def _leave_without_result(reason: str) -> None:
    """End the batch step without a submitit result: the job runs again (a requeue), so any result
    now would be read as the job's. Slurm's SIGTERM for the requeue may already have come."""
    print(f"supervisor: {reason}; leaving no submitit result", flush=True)
    terminated = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: terminated.set())
    terminated.wait(timeout=LEAVE_WAIT_S)
    os._exit(0)


def run_in_slurm_job(job_dir: str) -> dict:
    """The function submitit runs in the batch step (job_dir: LAUNCHER_JOB_DIR, which the sbatch script
    exports). Raises JobFailed so that the job ends FAILED."""
    # private for the whole batch step: submitit writes its result pickle after the supervisor returns
    os.umask(0o077)
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    stale = _stale_result_pickle()
    if restarts and stale is not None and stale.exists():
        stale.unlink()  # an earlier run's result (a finished job requeued by hand) is not this run's
    from launcher.supervisor.loop import Supervisor  # here, not at import: the login node pickles SlurmEntry only

    result = Supervisor(Path(job_dir), backend="slurm").run()
    if result.state is State.COMPLETED:
        return {"state": result.state.value, "attempt": result.attempt, "timings": result.timings}
    if result.continues:
        _leave_without_result(f"job {result.state.value}")
    info = job_info(os.environ.get("SLURM_JOB_ID", ""))
    if info is not None and info.restarts > restarts:
        # Slurm requeued the job while this (older) run still ended: the next run owns the result
        _leave_without_result(f"superseded by restart {info.restarts}")
    raise JobFailed(result.reason, result.cause)


class SlurmEntry:
    """Picklable callable for submitit (a class in an installed module, so nodes can import it). It carries
    nothing: the job folder reaches the batch step one way, LAUNCHER_JOB_DIR in the sbatch script."""

    def __call__(self) -> dict:
        return run_in_slurm_job(os.environ[JOB_DIR_ENV])

    def __repr__(self) -> str:
        return "SlurmEntry()"
