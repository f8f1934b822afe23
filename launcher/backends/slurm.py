"""The Slurm backend: a submitit executor that submits ONE heterogeneous job per launch.

submitit has no heterogeneous-job support, so the executor overrides the few methods that make
the script and read states: the script is launcher.sbatch's rendering (never submitit's own),
rendered once per submission; several submissions are several sbatch calls (het jobs cannot be
arrays); transient sbatch failures (launcher.slurm.transient) are retried with backoff; and the
watcher aggregates `ID+N` rows into the job's state so that waiting on a job that died without a
result ends instead of hanging.

A sweep passes its point's events (launcher.sweep.events.PointEvents) into `submit_launch`: the
point's folder is recorded before sbatch and its job id after; without events this is one launch
that prints its job and, with cluster.wait, follows it.
"""

from __future__ import annotations

import sys
import time
import typing as tp
from pathlib import Path

import submitit
from submitit.core.utils import CommandFunction, FailedJobError
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

from launcher.jobfolder import names
from launcher.jobfolder.layout import create_job_dir, record_submission, write_snapshot
from launcher.plan.plan import Plan
from launcher.plan.sbatch import render_sbatch
from launcher.plan.sbatch import supervisor_command
from launcher.slurm.states import parse_sacct
from launcher.slurm.transient import is_transient

FOREGROUND_POLL_S = 2.0  # cluster.wait: sacct at most this often for the job being followed


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
    watcher = HetSlurmInfoWatcher(delay_s=30)  # submitit's pattern: shared by jobs made outside an executor

    def watch_with(self, watcher: HetSlurmInfoWatcher) -> None:
        """Read this job's state through `watcher` (its executor's own, with its own delay), not the shared one."""
        self.watcher = watcher
        watcher.register_job(self.job_id)


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

    def __init__(self, plan: Plan, job_dir: Path, retries: int = 5, min_interval_s: float = 0.0,
                 script: tp.Optional[str] = None, poll_s: float = 30.0, script_path: tp.Optional[Path] = None):
        super().__init__(folder=job_dir / "submitit", max_num_timeout=0, python=plan.python)
        self.plan = plan
        self.job_dir = job_dir
        self.retries = retries
        self.min_interval_s = min_interval_s
        self._throttling = 0.0  # submitit's own per-executor throttle; _wait_turn spaces the calls
        self.script = script or ""  # rendered once (by submit(), or on the first submission)
        self.script_path = script_path  # the job folder's job.sbatch holding `script`: sbatch runs it as is
        self.watcher = HetSlurmInfoWatcher(delay_s=poll_s)  # this executor's jobs poll sacct at most every poll_s
        self.attempts_log: list[str] = []

    def _internal_process_submissions(self, delayed_submissions):
        # never a job array: one sbatch per submission (PicklingExecutor's loop, not SlurmExecutor's)
        return submitit.core.core.PicklingExecutor._internal_process_submissions(self, delayed_submissions)

    def _make_submission_file_text(self, command: str, uid: str) -> str:
        if not self.script:
            self.script = render_sbatch(self.plan, str(self.job_dir), supervisor_command(self.plan, str(self.folder)))
        return self.script

    def _num_tasks(self) -> int:
        return 1  # the supervisor, in the batch step

    def _submit_command(self, command: str):
        delays = _retry_delays(self.retries)
        while True:
            _wait_turn(self.min_interval_s)
            try:
                job = self._sbatch(command)
                job.watch_with(self.watcher)
                return job
            except FailedJobError as error:  # how submitit's CommandFunction reports sbatch's stderr
                message = str(error).strip() or "sbatch exited non-zero without a message"
                self.attempts_log.append(message)
                if not is_transient(message) or not delays:
                    kind = "transient, retries exhausted" if is_transient(message) else "permanent"
                    raise SubmissionError(f"sbatch failed ({kind}): {message}") from None
                delay = delays.pop(0)
                print(f"launcher: sbatch failed transiently ({message.splitlines()[-1]}); retrying in {delay:g} s",
                      file=sys.stderr)
                time.sleep(delay)

    def _sbatch(self, command: str) -> HetSlurmJob:
        """One sbatch call. With the job folder's job.sbatch already written, that file is what sbatch
        runs (submitit would write a second copy of the script, then a link to it, first)."""
        if self.script_path is None:
            return super()._submit_command(command)
        output = CommandFunction(self._make_submission_command(self.script_path), verbose=False)()
        job_id = self._get_job_id_from_submission_command(output)
        return self.job_class(folder=self.folder, job_id=job_id, tasks=list(range(self._num_tasks())))



def submit(plan: Plan, cfg, job_dir: Path | None = None, git: tp.Optional[tuple[str, str]] = None,
           poll_s: float = FOREGROUND_POLL_S) -> tuple[HetSlurmJob, Path]:
    """Create the job folder (unless given), snapshot it, submit; (job, job folder). sbatch calls of this
    process are spaced by cluster.submit_rate_per_s; the job's watcher polls sacct at most every poll_s."""
    from launcher.supervisor.entry import SlurmEntry  # light: stdlib + launcher only

    job_dir = job_dir or create_job_dir(cfg.cluster.job_root, plan.name)
    script = render_sbatch(plan, str(job_dir), supervisor_command(plan, str(job_dir / "submitit")))
    write_snapshot(job_dir, plan, cfg, sbatch_script=script, git=git)
    rate = float(cfg.cluster.submit_rate_per_s or 0)
    executor = HetSlurmExecutor(plan, job_dir, retries=cfg.cluster.submit_retries,
                                min_interval_s=1.0 / rate if rate > 0 else 0.0, script=script, poll_s=poll_s,
                                script_path=job_dir / names.SBATCH_SCRIPT)
    job = executor.submit(SlurmEntry())
    record_submission(job_dir, "slurm", job.job_id, sys.argv)
    return job, job_dir


def submit_launch(plan: Plan, cfg, events=None) -> int:
    """Submit one launch; its exit code. `events`: a sweep's point, told before and after sbatch."""
    job_dir = events.on_submitting(cfg, plan) if events is not None else None
    try:
        job, job_dir = submit(plan, cfg, job_dir, git=events.git_snapshot() if events is not None else None)
    except SubmissionError as error:
        print(f"launcher: {error}", file=sys.stderr)
        if is_transient(str(error)):  # retries exhausted: say what it means, in the launcher's words
            print("launcher: no Slurm controller answered this machine (is slurmctld up? `scontrol ping` says); "
                  "nothing was queued. To run on this machine instead, add cluster=local", file=sys.stderr)
        if events is not None:
            events.on_submit_failed(cfg, error)
        return 1
    print(f"launcher: submitted job {job.job_id}; job folder {job_dir}", flush=True)
    if events is not None:
        events.on_submitted(cfg, job.job_id, job_dir)
        return 0
    if cfg.cluster.wait:
        from launcher.show.watch import watch_slurm_job

        return watch_slurm_job(job, job_dir)
    return 0


__all__ = ["HetSlurmExecutor", "HetSlurmJob", "HetSlurmInfoWatcher", "SubmissionError", "submit", "submit_launch"]
