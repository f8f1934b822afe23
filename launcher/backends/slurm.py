"""The Slurm backend: a submitit executor that submits ONE heterogeneous job per launch.

submitit has no heterogeneous-job support, so the executor overrides the few methods that make
the script and read states: the script is launcher.sbatch's rendering (never submitit's own),
several submissions are several sbatch calls (het jobs cannot be arrays), transient sbatch
failures are retried with backoff, and the watcher aggregates `ID+N` rows into the job's state
so that waiting on a job that died without a result ends instead of hanging.
"""

from __future__ import annotations

import re
import sys
import time
import typing as tp
from pathlib import Path

import submitit
from submitit.core.utils import FailedJobError
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

from launcher.jobfolder.layout import create_job_dir, record_submission, write_snapshot
from launcher.plan.plan import Plan
from launcher.plan.sbatch import render_sbatch
from launcher.plan.sbatch import supervisor_command
from launcher.slurm.states import FINISHED_STATES, parse_sacct

# slurmctld is busy or restarting: worth another try. Anything else (bad partition, account,
# QOS, impossible request) is permanent and reported as is.
TRANSIENT_SBATCH = re.compile(
    r"Socket timed out|Resource temporarily unavailable|Unable to contact slurm controller|"
    r"slurm_receive_msg|Connection refused|Zero Bytes were transmitted|Transport endpoint|"
    r"temporarily unable to accept job|Slurm temporarily unable", re.I)


class SubmissionError(RuntimeError):
    pass


class HetSlurmInfoWatcher(SlurmInfoWatcher):
    """submitit's sacct watcher, reading het components (`ID+0`, `ID+1`) as one job."""

    def _make_command(self) -> tp.Optional[tp.List[str]]:
        to_check = {x.split("_")[0] for x in self._registered - self._finished}
        if not to_check:
            return None
        return ["sacct", "-o", "JobID,State,NodeList", "--parsable2", "-j", ",".join(sorted(to_check))]

    def read_info(self, string: tp.Union[bytes, str]) -> tp.Dict[str, tp.Dict[str, str]]:
        if not isinstance(string, str):
            string = string.decode()
        return parse_sacct(string)


class HetSlurmJob(SlurmJob):
    watcher = HetSlurmInfoWatcher(delay_s=30)


def _retry_delays(retries: int, base_s: float = 1.0, cap_s: float = 30.0) -> list[float]:
    return [min(cap_s, base_s * 2 ** i) for i in range(retries)]


# --- rate limit (sweeps): every sbatch call of this process waits its turn, so a sweep never sends
# slurmctld more than cluster.submit_rate_per_s submissions per second.
_LAST_SBATCH: list[float] = []  # monotonic start time of this process's previous sbatch call


def _wait_turn(min_interval_s: float) -> None:
    if _LAST_SBATCH and min_interval_s > 0:
        delay = _LAST_SBATCH[0] + min_interval_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    _LAST_SBATCH[:] = [time.monotonic()]


class HetSlurmExecutor(submitit.SlurmExecutor):
    """Submits the supervisor as the batch step of the plan's heterogeneous job."""

    job_class = HetSlurmJob

    def __init__(self, plan: Plan, job_dir: Path, retries: int = 5, min_interval_s: float = 0.0):
        super().__init__(folder=job_dir / "submitit", max_num_timeout=0, python=plan.python)
        self.plan = plan
        self.job_dir = job_dir
        self.retries = retries
        self.min_interval_s = min_interval_s
        self._throttling = 0.0  # submitit's own per-executor throttle; _wait_turn spaces the calls
        self.script = ""
        self.attempts_log: list[str] = []

    def _internal_process_submissions(self, delayed_submissions):
        # never a job array: one sbatch per submission (PicklingExecutor's loop, not SlurmExecutor's)
        return submitit.core.core.PicklingExecutor._internal_process_submissions(self, delayed_submissions)

    def _make_submission_file_text(self, command: str, uid: str) -> str:
        self.script = render_sbatch(self.plan, str(self.job_dir), supervisor_command(self.plan, str(self.folder)))
        return self.script

    def _num_tasks(self) -> int:
        return 1  # the supervisor, in the batch step

    def _submit_command(self, command: str):
        delays = _retry_delays(self.retries)
        while True:
            _wait_turn(self.min_interval_s)
            try:
                return super()._submit_command(command)
            except FailedJobError as error:  # how submitit's CommandFunction reports sbatch's stderr
                message = str(error).strip() or "sbatch exited non-zero without a message"
                self.attempts_log.append(message)
                if not TRANSIENT_SBATCH.search(message) or not delays:
                    kind = "transient, retries exhausted" if TRANSIENT_SBATCH.search(message) else "permanent"
                    raise SubmissionError(f"sbatch failed ({kind}): {message}") from None
                delay = delays.pop(0)
                print(f"launcher: sbatch failed transiently ({message.splitlines()[-1]}); retrying in {delay:g} s",
                      file=sys.stderr)
                time.sleep(delay)


def submit(plan: Plan, cfg: dict, job_dir: Path | None = None, min_interval_s: float = 0.0) -> tuple[HetSlurmJob, Path]:
    """Create the job folder, snapshot it, submit; (job, job folder)."""
    from launcher.supervisor.entry import SlurmEntry  # light: stdlib + launcher only

    job_dir = job_dir or create_job_dir(cfg.cluster.job_root, plan.name)
    script = render_sbatch(plan, str(job_dir), supervisor_command(plan, str(job_dir / "submitit")))
    write_snapshot(job_dir, plan, cfg, sbatch_script=script)
    executor = HetSlurmExecutor(plan, job_dir, retries=cfg.cluster.submit_retries, min_interval_s=min_interval_s)
    job = executor.submit(SlurmEntry(str(job_dir)))
    job.watcher.delay_s = 2  # the foreground wait below polls sacct at most this often
    record_submission(job_dir, "slurm", job.job_id, sys.argv)
    return job, job_dir


def submit_launch(plan: Plan, cfg: dict) -> int:
    from launcher.launch import in_sweep

    job_dir, interval = None, 0.0
    if in_sweep():  # sweep hooks: the point's folder is recorded before sbatch; calls are rate-limited
        from launcher.sweep.run import record_submitting, submit_interval_s

        job_dir, interval = record_submitting(cfg, plan), submit_interval_s(cfg)
    try:
        job, job_dir = submit(plan, cfg, job_dir, min_interval_s=interval)
    except SubmissionError as error:
        print(f"launcher: {error}", file=sys.stderr)
        if in_sweep():
            from launcher.sweep.run import record_submit_failure

            record_submit_failure(cfg, error)
        return 1
    print(f"launcher: submitted job {job.job_id}; job folder {job_dir}", flush=True)
    if in_sweep():
        from launcher.sweep.run import record_submission as record_point

        record_point(cfg, job.job_id, job_dir)
        return 0
    if cfg.cluster.wait:
        from launcher.show.watch import watch_slurm_job

        return watch_slurm_job(job, job_dir)
    return 0


def wait_for_state(job: HetSlurmJob, timeout_s: float) -> str:
    """Poll (through the watcher) until the job's aggregated state is final; the state."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = job.watcher.get_state(job.job_id, mode="force")
        if state in FINISHED_STATES:
            return state
        time.sleep(1)
    return job.watcher.get_state(job.job_id, mode="force")


__all__ = ["HetSlurmExecutor", "HetSlurmJob", "HetSlurmInfoWatcher", "SubmissionError", "submit", "submit_launch"]
