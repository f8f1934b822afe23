"""How a trainer entry point ends (launcher.train, launcher.train.user_script): the job folder found, the
frozen code activated, the body run with a heartbeat writer, and every failure turned into the same three
things: a line on stderr, heartbeat phase "failed" with the error and exit code (the supervisor's reason),
and the exit code of launcher.train.errors. The distributed group is shut down however it ends."""

from __future__ import annotations

import traceback
from typing import Callable

from launcher.jobfolder.frozen_code import activate
from launcher.jobfolder.progress import TrainerPhase
from launcher.train.errors import EXIT_BAD_JOB, EXIT_FAILED, EXIT_PREFLIGHT_FAILED, JobError, PreflightFailed
from launcher.train.job import Job, folders, load_job
from launcher.train.ranks import global_rank, shutdown_distributed
from launcher.train.report import HeartbeatWriter, error


def run_reported(body: Callable[[Job, HeartbeatWriter], int], failed: str = "training failed") -> int:
    """body(job, beat)'s exit code; `failed` opens the line an unexpected exception prints."""
    try:
        where = folders()
    except JobError as e:
        error(f"error: {e}")
        return EXIT_BAD_JOB  # no job folder: nowhere to beat
    activate(where.job_dir)  # user code frozen at submission is imported from <job>/code
    beat = HeartbeatWriter(where.attempt_dir, enabled=global_rank() == 0)
    try:
        return body(load_job(where), beat)
    except JobError as e:
        return _failed(beat, f"error: {e}", str(e), EXIT_BAD_JOB)
    except PreflightFailed as e:
        return _failed(beat, f"preflight failed: {e}", str(e), EXIT_PREFLIGHT_FAILED)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        return _failed(beat, f"{failed}: {type(e).__name__}: {e}", f"{type(e).__name__}: {e}", EXIT_FAILED)
    finally:
        shutdown_distributed()


def _failed(beat: HeartbeatWriter, line: str, reason: str, code: int) -> int:
    error(line)
    beat(TrainerPhase.FAILED, beat.last_step(), error=reason, exit_code=code)
    return code
