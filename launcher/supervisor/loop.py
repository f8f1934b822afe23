"""The in-job supervisor: ties the server's and the trainer's lifecycles together.

It runs in the batch step on Slurm (through submitit, no outer srun) and in the foreground with
the local backend. Timeline, in supervisor.log of the attempt folder:
  server step started -> server.json published -> /health 200 (bounded by startup_timeout_s)
  -> trainer step started with the server URL -> watch both -> end
Endings (docs/faults.md has the whole matrix):
- the trainer ends -> stop the server; COMPLETED only if the trainer also reported "done"
  (srun exits 0 when a node of its step fails);
- the server exits, refuses connections, or stops answering /health for health_grace_s -> FAILED;
- the trainer's heartbeat stands still for watchdog_timeout_s -> FAILED naming the stalled phase;
- USR2 (walltime or preemption) -> ask the trainer for a checkpoint (bounded by what is left of
  the run), stop both, `scontrol requeue` (at most max_requeues times) -> REQUEUED;
- SIGTERM from Slurm (requeue, preemption, node failure, scancel) -> record why within KillWait,
  stop both, and leave no submitit result behind for a job that will run again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from launcher.slurm import own_job as slurm_self
from launcher.jobfolder.layout import attempt_dir as make_attempt_dir
from launcher.jobfolder.layout import load_plan, read_json, write_json
from launcher.plan.plan import Plan
from launcher.jobfolder.progress import CHECKPOINT_DONE, read_heartbeat, request_checkpoint
from launcher.supervisor.steps import LocalSteps, SlurmSteps, Step, describe, srun_node_failures, srun_transient_error, stop_steps

TICK_S = 0.5  # how often exits, signals and files are looked at
HEALTH_EVERY_S = 1.0  # /health polls, during startup and while training
RESULT_FILE = "result.json"
STATUS_FILE = "status.json"
CONTROLLER_RETRY_S = 300.0  # how long a step whose srun cannot reach slurmctld is started again
KILLWAIT_QUERY_S = 2.0  # scontrol calls inside Slurm's KillWait window (30 s by default, 5 s on the test cluster)
KILLWAIT_STOP_S = 1.0  # SIGTERM -> SIGKILL for the components inside that window
END_MARGIN_S = 5.0  # what USR2 handling keeps in hand before Slurm's end of the run


class JobFailed(RuntimeError):
    """The job ended FAILED; the message is the reason (also in result.json and supervisor.log)."""

    def __init__(self, message: str, cause: str = ""):
        super().__init__(message)
        self.cause = cause


@dataclass
class Outcome:
    state: str  # COMPLETED | FAILED | REQUEUED | STOPPED
    reason: str
    trainer_rc: Optional[int] = None
    server_rc: Optional[int] = None
    attempt: int = 1
    timings: dict = field(default_factory=dict)
    # what ended the attempt: finished, trainer_failed, server_failed, hang, walltime, preemption,
    # requeue, node_failure, cancel, max_requeues, start_failed (docs/faults.md)
    cause: str = ""
    # the job runs again (REQUEUED by the supervisor or by Slurm): no submitit result may be left
    continues: bool = False


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def health(url: str, timeout_s: float = 2.0) -> str:
    """GET /health: "ok" (200), "refused" (nothing listens: the server process is gone) or "error"
    (a timeout or a non-200 answer: a stuck or busy server, judged over server.health_grace_s)."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout_s) as response:
            return "ok" if response.status == 200 else "error"
    except urllib.error.HTTPError:
        return "error"
    except urllib.error.URLError as error:
        return "refused" if isinstance(error.reason, ConnectionRefusedError) else "error"
    except ConnectionRefusedError:
        return "refused"
    except (OSError, ValueError):
        return "error"


def health_ok(url: str, timeout_s: float = 2.0) -> bool:
    return health(url, timeout_s) == "ok"


def job_setting(job_dir: Path, dotted: str, default):
    """A key of the job's resolved config.yaml (settings that only the supervisor reads)."""
    try:
        from launcher.config.compose import load_resolved

        node = load_resolved(str(Path(job_dir) / "config.yaml"))
        for part in dotted.split("."):
            node = node[part]
        return node
    except Exception:  # noqa: BLE001 - an older job folder without the key: the default
        return default


def make_private(job_dir: Path) -> None:
    """No group/world write anywhere in the job folder (files made before the job started follow the
    submitting shell's umask; everything the job writes follows the supervisor's umask 077)."""
    for root, dirs, files in os.walk(job_dir):
        for name in dirs + files:
            path = os.path.join(root, name)
            try:
                mode = os.lstat(path).st_mode
                if not os.path.islink(path) and mode & 0o022:
                    os.chmod(path, mode & ~0o022 & 0o7777)
            except OSError:
                pass


class Supervisor:
    def __init__(self, job_dir: Path, backend: str, attempt: Optional[int] = None):
        self.job_dir = Path(job_dir)
        self.plan: Plan = load_plan(self.job_dir)
        self.backend = backend
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        self.attempt = attempt or restarts + 1
        self.restarts = restarts
        self.job_id = os.environ.get("SLURM_JOB_ID", "")
        self.requeue_on_node_failure = bool(job_setting(self.job_dir, "cluster.requeue_on_node_failure", False))
        self.dir = make_attempt_dir(self.job_dir, self.attempt)
        self.runner = SlurmSteps(self.plan) if backend == "slurm" else LocalSteps(self.plan)
        self.t0 = time.monotonic()
        self.timings: dict[str, float] = {}
        self.signalled: Optional[str] = None
        self.wake = threading.Event()
        self.server: Optional[Step] = None
        self.trainer: Optional[Step] = None
        self.server_url: Optional[str] = None
        self.first_start: dict[str, float] = {}
        self.log_file = open(self.dir / "supervisor.log", "a", buffering=1)

    # ---------------------------------------------------------------- reporting
    def log(self, message: str) -> None:
        stamp = dt.datetime.now().isoformat(timespec="seconds")
        line = f"{stamp} +{time.monotonic() - self.t0:7.1f}s {message}"
        self.log_file.write(line + "\n")
        print(f"supervisor: {line}", flush=True)

    def phase(self, name: str, **extra) -> None:
        write_json(self.dir / STATUS_FILE, {"phase": name, "since": time.time(), "attempt": self.attempt, **extra})

    def mark(self, event: str) -> float:
        self.timings[event] = round(time.monotonic() - self.t0, 2)
        return self.timings[event]

    # ---------------------------------------------------------------- signals
    def _on_signal(self, signum, frame) -> None:
        self.signalled = signal.Signals(signum).name
        self.wake.set()

    def install_signals(self) -> None:
        for sig in (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    # ---------------------------------------------------------------- components
    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({k: str(v) for k, v in self.plan.env.items()})
        env.update(LAUNCHER_JOB_DIR=str(self.job_dir), LAUNCHER_ATTEMPT_DIR=str(self.dir),
                   LAUNCHER_ATTEMPT=str(self.attempt), PYTHONUNBUFFERED="1", **extra)
        return env

    def start(self, name: str, **extra: str) -> Step:
        component = self.plan.component(name)
        env = self.env(**extra)
        env.update({k: str(v) for k, v in component.env.items()})
        step = self.runner.start(component, env, self.dir / f"{name}.log")
        self.first_start.setdefault(name, time.monotonic())
        self.log(f"{name} started: {describe(step)} (pid {step.pid}, log {name}.log)")
        return step

    def restart_if_transient(self, step: Step, **extra: str) -> Optional[Step]:
        """A step whose srun could not reach slurmctld (restarting) is started again, for up to
        CONTROLLER_RETRY_S after its first start; None when the failure is the component's own."""
        error = srun_transient_error(step)
        if error is None or time.monotonic() - self.first_start.get(step.name, 0) > CONTROLLER_RETRY_S:
            return None
        self.log(f"{step.name} step could not be started ({error}); slurmctld is unreachable, trying again in 5 s")
        step.stop(0)
        if self.wake.wait(5.0) and self.signalled:
            raise Interrupted(self.signalled)
        return self.start(step.name, **extra)

    def stop(self, step: Optional[Step], why: str) -> Optional[int]:
        if step is None:
            return None
        running = step.poll() is None
        rc = step.stop(self.plan.policies.stop_grace_s)
        if running:
            self.log(f"{step.name} stopped ({why}), exit code {rc}")
        return rc

    def stop_all(self, why: str, grace_s: Optional[float] = None) -> tuple[Optional[int], Optional[int]]:
        """Both components at once (SIGTERM to both, then SIGKILL after the grace): a hung or frozen
        component costs one grace period, not one per component."""
        steps = [s for s in (self.trainer, self.server) if s is not None]
        running = [s for s in steps if s.poll() is None]
        codes = stop_steps(steps, self.plan.policies.stop_grace_s if grace_s is None else grace_s)
        for step in running:
            self.log(f"{step.name} stopped ({why}), exit code {codes[step.name]}")
        return (codes.get("trainer") if self.trainer else None), (codes.get("server") if self.server else None)

    # ---------------------------------------------------------------- before anything starts
    def check_restart(self) -> None:
        """On a requeued run: say why the previous run ended; refuse to run past max_requeues, or after
        a node failure when requeue_on_node_failure is off (the previous supervisor could not stop the
        requeue itself if its own node was the one lost)."""
        if self.backend != "slurm" or self.restarts == 0:
            return
        previous, node_failure = self.previous_run()
        self.log(f"restart {self.restarts} of job {self.job_id}: {previous}")
        self.cancel_stale_steps()
        limit = self.plan.policies.max_requeues
        if self.restarts > limit:
            raise JobFailed(f"Slurm started this job a {self.restarts + 1}th time, but cluster.max_requeues={limit}; "
                            f"{previous}", "max_requeues")
        if node_failure and not self.requeue_on_node_failure:
            raise JobFailed(f"{previous}; not running again after a node failure "
                            f"(cluster.requeue_on_node_failure=false)", "node_failure")

    def cancel_stale_steps(self) -> None:
        """Steps of an earlier run still alive in this one. When the batch node fails, Slurm 22.05
        requeues only het component 0: component 1 keeps its allocation and the old trainer step keeps
        training (into the shared output_dir), and the new trainer step waits forever for its node.
        Nothing of ours runs yet, so every step but batch/extern is stale."""
        info = slurm_self.job_info(self.job_id)
        stale = slurm_self.running_steps(info.component_ids) if info else None
        if not stale:
            return
        self.log(f"cancelling steps left from the previous run: {', '.join(stale)}")
        slurm_self.cancel_steps(stale)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and slurm_self.running_steps(info.component_ids):
            time.sleep(1)
        left = slurm_self.running_steps(info.component_ids)
        self.log(f"steps still present after 60 s: {', '.join(left)}" if left else "stale steps gone")

    def previous_run(self) -> tuple[str, bool]:
        """(what ended the previous run, whether it was a node failure)."""
        before = read_json(self.job_dir / f"attempt-{self.attempt - 1}" / RESULT_FILE) or {}
        if before.get("state") and "deciding" not in before.get("reason", ""):
            reason = before["reason"].splitlines()[0]
            return f"attempt {self.attempt - 1} ended {before['state']}: {reason}", before.get("cause") == "node_failure"
        runs = slurm_self.previous_runs(self.job_id)
        earlier = [r for r in runs if r["State"].split()[0] not in ("RUNNING", "PENDING")]
        if earlier:
            last = earlier[-1]
            state = last["State"].split()[0]
            return (f"attempt {self.attempt - 1} ended {state} on {last['NodeList']} by Slurm's accounting "
                    f"(its supervisor left no result: its node was lost)"), state == "NODE_FAIL"
        return f"attempt {self.attempt - 1} left no result and accounting has no earlier run", False

    # ---------------------------------------------------------------- phases
    def wait_server(self) -> str:
        """Wait for server.json and /health 200; the URL, or JobFailed."""
        policies = self.plan.policies
        deadline = time.monotonic() + policies.startup_timeout_s
        url = None
        self.phase("server_starting", started=time.time())
        while True:
            rc = self.server.poll()
            if rc is not None:
                again = self.restart_if_transient(self.server)
                if again is not None:
                    self.server = again
                    continue
                raise JobFailed(f"server exited with code {rc} before becoming healthy; last lines of server.log:\n"
                                f"{tail(self.dir / 'server.log')}", "server_failed")
            if self.signalled:
                raise Interrupted(self.signalled)
            if url is None:
                info = read_json(self.dir / "server.json")
                if info:
                    url = info["url"]
                    self.log(f"server address published: {url} (host {info.get('host')})")
            if url and health_ok(url):
                self.log(f"server healthy after {self.mark('server_healthy'):.1f} s at {url}")
                return url
            if time.monotonic() > deadline:
                raise JobFailed(f"server not healthy after server.startup_timeout_s={policies.startup_timeout_s:g} s; "
                                f"last lines of server.log:\n{tail(self.dir / 'server.log')}", "server_failed")
            self.wake.wait(HEALTH_EVERY_S)

    def trainer_ended(self, trainer_rc: int) -> Optional[Outcome]:
        """The outcome once the trainer step ended, or None when it was started again."""
        extra = {"LAUNCHER_SERVER_URL": self.server_url} if self.server_url else {}
        if trainer_rc != 0:
            again = self.restart_if_transient(self.trainer, **extra)
            if again is not None:
                self.trainer = again
                return None
        self.mark("trainer_ended")
        self.log(f"trainer ended first with exit code {trainer_rc}")
        server_rc = self.stop(self.server, "trainer ended")
        if srun_node_failures(self.trainer) and self.backend == "slurm":
            info = slurm_self.job_info(self.job_id, KILLWAIT_QUERY_S)
            requeued = info is not None and (info.requeued or info.restarts > self.restarts)
            return self.node_failure(self.failed_nodes(info), requeued, trainer_rc, server_rc)
        if trainer_rc != 0:
            return Outcome("FAILED", f"trainer exited with code {trainer_rc}; last lines of trainer.log:\n"
                                     f"{tail(self.dir / 'trainer.log')}", trainer_rc, server_rc, cause="trainer_failed")
        beat = read_heartbeat(self.dir) or {}
        if beat.get("phase") != "done":
            # srun reports 0 when a node of its step failed ("srun: error: Node failure on ...")
            return Outcome("FAILED", f"the trainer step ended with exit code 0 but the trainer never reported "
                                     f"finishing (last heartbeat: phase {beat.get('phase')!r}, step "
                                     f"{beat.get('step')}); last lines of trainer.log:\n{tail(self.dir / 'trainer.log')}",
                           trainer_rc, server_rc, cause="trainer_failed")
        return Outcome("COMPLETED", "trainer finished", trainer_rc, server_rc, cause="finished")

    def watch(self, url: Optional[str]) -> Outcome:
        policies = self.plan.policies
        trainer_started = time.monotonic()
        last_health = time.monotonic()
        next_health = 0.0
        refusals = 0
        last_progress = (trainer_started, "start (no heartbeat yet)", None)  # (when, phase, step)
        last_beat_time = None
        while True:
            if self.signalled:
                raise Interrupted(self.signalled)
            trainer_rc = self.trainer.poll()
            if trainer_rc is not None:
                outcome = self.trainer_ended(trainer_rc)
                if outcome is not None:
                    return outcome
                last_progress = (time.monotonic(), "start (no heartbeat yet)", None)
                continue
            if self.server is not None:
                server_rc = self.server.poll()
                if server_rc is not None:
                    self.mark("server_ended")
                    self.log(f"server ended first with exit code {server_rc}")
                    trainer_rc = self.stop(self.trainer, "server died")
                    return Outcome("FAILED", f"server exited with code {server_rc} during training; last lines "
                                             f"of server.log:\n{tail(self.dir / 'server.log')}",
                                   trainer_rc, server_rc, cause="server_failed")
                now = time.monotonic()
                if url and now >= next_health:
                    next_health = now + HEALTH_EVERY_S
                    answer = health(url)
                    now = time.monotonic()
                    refusals = refusals + 1 if answer == "refused" else 0
                    if answer == "ok":
                        last_health = now
                    elif refusals >= 2:
                        # the API server is gone even if its step lingers (orphaned engine processes
                        # keep an srun step alive until Slurm reaps them)
                        self.log("server refuses connections: its process is gone")
                        trainer_rc, server_rc = self.stop_all("server died")
                        return Outcome("FAILED", f"server process died (connection refused at {url}); last lines "
                                                 f"of server.log:\n{tail(self.dir / 'server.log')}",
                                       trainer_rc, server_rc, cause="server_failed")
                    elif now - last_health > policies.health_grace_s:
                        self.log(f"server /health silent for {now - last_health:.0f} s (hung or frozen server)")
                        trainer_rc, server_rc = self.stop_all("server unresponsive")
                        return Outcome("FAILED", f"server stopped answering /health for more than "
                                                 f"server.health_grace_s={policies.health_grace_s:g} s "
                                                 f"(hung or frozen; it still accepts connections)",
                                       trainer_rc, server_rc, cause="hang")
            beat = read_heartbeat(self.dir)
            if beat and beat.get("time") != last_beat_time:  # any new heartbeat is progress
                last_beat_time = beat.get("time")
                last_progress = (time.monotonic(), beat.get("phase"), beat.get("step"))
                if beat.get("phase") == "step" and beat.get("step") and "first_step" not in self.timings:
                    self.log(f"first training step done after {self.mark('first_step'):.1f} s")
            silent = time.monotonic() - last_progress[0]
            if silent > policies.watchdog_timeout_s:
                phase, step = last_progress[1], last_progress[2]
                self.log(f"trainer made no progress for {silent:.0f} s (phase {phase}, step {step})")
                trainer_rc, server_rc = self.stop_all("trainer hung")
                at = f" at step {step}" if step is not None else ""
                return Outcome("FAILED", f"trainer made no progress for more than trainer.watchdog_timeout_s="
                                         f"{policies.watchdog_timeout_s:g} s; stalled in phase {phase!r}{at}",
                               trainer_rc, server_rc, cause="hang")
            self.wake.wait(TICK_S)

    def checkpoint_and_stop(self, why: str, budget_s: float,
                            stop_grace_s: Optional[float] = None) -> tuple[Optional[int], Optional[int], Optional[dict]]:
        """Ask the trainer to save (for at most budget_s), then stop both. (trainer rc, server rc,
        checkpoint.done or None). A SIGTERM meanwhile (Slurm's end came first) cuts the wait short."""
        done = None
        if self.trainer is not None and self.trainer.poll() is None:
            request_checkpoint(self.dir, why)
            self.log(f"{why}: asked the trainer for a checkpoint (waiting up to {budget_s:.0f} s; "
                     f"cluster.checkpoint_timeout_s={self.plan.policies.checkpoint_timeout_s:g})")
            deadline = time.monotonic() + budget_s
            while time.monotonic() < deadline and self.trainer.poll() is None and self.signalled != "SIGTERM":
                if (self.dir / CHECKPOINT_DONE).exists():
                    break
                time.sleep(TICK_S)
            done = read_json(self.dir / CHECKPOINT_DONE)
            self.log(f"checkpoint saved at step {done.get('step')}: {done.get('checkpoint')}" if done
                     else "no checkpoint within the time limit")
            # after its checkpoint the trainer exits by itself (0, heartbeat "done"): give it a moment
            settle = time.monotonic() + min(5.0, max(0.0, deadline - time.monotonic()))
            while done and self.trainer.poll() is None and time.monotonic() < settle and self.signalled != "SIGTERM":
                time.sleep(0.2)
        trainer_rc, server_rc = self.stop_all(why, stop_grace_s)
        return trainer_rc, server_rc, done

    # ---------------------------------------------------------------- the whole run
    def run(self) -> Outcome:
        os.umask(0o077)  # job folders are private: every file the job writes from here on is the user's alone
        self.install_signals()
        plan = self.plan
        self.log(f"attempt {self.attempt} of job {self.job_id or 'local'} "
                 f"({plan.backend}, {plan.mode} mode) in {self.dir}")
        make_private(self.job_dir)
        try:
            try:
                self.check_restart()
                if plan.mode == "server":
                    self.server = self.start("server")
                    self.server_url = self.wait_server()
                self.phase("trainer_running", server_url=self.server_url)
                extra = {"LAUNCHER_SERVER_URL": self.server_url} if self.server_url else {}
                self.trainer = self.start("trainer", **extra)
                self.mark("trainer_started")
                outcome = self.watch(self.server_url)
            except JobFailed as failure:
                trainer_rc, server_rc = self.stop_all("job failed")
                outcome = Outcome("FAILED", str(failure), trainer_rc, server_rc, cause=failure.cause)
            except Interrupted as interrupt:
                outcome = self.on_interrupt(interrupt.signal_name)
        finally:
            self.stop_all("supervisor exiting")
        outcome.attempt = self.attempt
        outcome.timings = self.timings
        self.finish(outcome)
        return outcome

    def on_interrupt(self, name: str) -> Outcome:
        if self.backend == "slurm" and name == "SIGUSR2":
            return self.on_usr2()
        if self.backend == "slurm" and name == "SIGTERM":
            return self.on_sigterm()
        trainer_rc, server_rc = self.stop_all(f"{name} received")
        return Outcome("STOPPED", f"stopped by {name}", trainer_rc, server_rc, cause="cancel")

    def on_usr2(self) -> Outcome:
        """Walltime (--signal=B:USR2@signal_before_end_s) or preemption (partition GraceTime with
        preempt_send_user_signal): checkpoint within what is left of the run, then requeue."""
        policies = self.plan.policies
        if self.trainer is not None and self.trainer.poll() is not None:
            outcome = self.trainer_ended(self.trainer.poll())  # it finished as the signal came: no requeue
            if outcome is not None:
                return outcome
        info = slurm_self.job_info(self.job_id)
        now = time.time()
        preempted = bool(info and info.preempt_time)
        cause = "preemption" if preempted else "walltime"
        end = info.end_time if info and info.end_time else now + policies.signal_before_end_s
        left = end - now
        # the checkpoint gets most of what is left; stopping and `scontrol requeue` the rest (a
        # preemption GraceTime can be seconds: the stop grace shrinks with it)
        budget = max(1.0, min(policies.checkpoint_timeout_s, 0.6 * left, left - END_MARGIN_S))
        stop_grace = max(1.0, min(policies.stop_grace_s, 0.2 * left))
        self.log(f"USR2: {'preempted' if preempted else 'walltime near'}, Slurm ends this run in {left:.0f} s")
        trainer_rc, server_rc, done = self.checkpoint_and_stop(f"{cause} signal (USR2)", budget, stop_grace)
        if self.signalled == "SIGTERM":
            return self.on_sigterm()
        saved = f"checkpoint at step {done.get('step')} saved" if done else "no checkpoint saved"
        if self.restarts >= policies.max_requeues:
            return Outcome("FAILED", f"{cause}: {saved}, but not requeued: cluster.max_requeues={policies.max_requeues} "
                                     f"reached after {self.restarts} requeue(s)", trainer_rc, server_rc,
                           cause="max_requeues")
        ok, message = slurm_self.requeue(self.job_id, deadline=time.monotonic() + max(10.0, end - time.time()))
        if not ok:
            return Outcome("FAILED", f"{cause}: {saved}; {message}", trainer_rc, server_rc, cause=cause)
        return Outcome("REQUEUED", f"{cause}: {saved}; requeued (restart {self.restarts + 1} of at most "
                                   f"{policies.max_requeues})", trainer_rc, server_rc, cause=cause, continues=True)

    def on_sigterm(self) -> Outcome:
        """Slurm is ending this run now (KillWait seconds until SIGKILL): record first, then find out
        why, stop both quickly. A requeued job resumes from its last checkpoint in output_dir."""
        write_json(self.dir / RESULT_FILE, asdict(Outcome("STOPPED", "SIGTERM from Slurm; deciding why",
                                                          attempt=self.attempt, cause="cancel")))
        info = slurm_self.job_info(self.job_id, KILLWAIT_QUERY_S)
        trainer_rc, server_rc = self.stop_all("SIGTERM from Slurm", grace_s=KILLWAIT_STOP_S)
        requeued = info is not None and (info.requeued or info.restarts > self.restarts)
        failed = self.failed_nodes(info)
        if not failed and requeued:
            # a node that failed and came straight back (ReturnToService) leaves no trace in its state:
            # accounting records the run that just ended as NODE_FAIL
            runs = [r for r in slurm_self.previous_runs(self.job_id, KILLWAIT_QUERY_S) if r["End"] != "Unknown"]
            if runs and runs[-1]["State"].startswith("NODE_FAIL"):
                failed = {"one of " + ",".join(info.nodes): ("NODE_FAIL in accounting", "")}
        state = info.state if info else "unknown (scontrol did not answer)"
        self.log(f"SIGTERM: job state {state}, restarts {info.restarts if info else '?'}, "
                 f"failed nodes: {slurm_self.describe_nodes(failed) or 'none'}")
        if failed or (info and "NODE_FAIL" in info.states):
            return self.node_failure(failed, requeued, trainer_rc, server_rc)
        if requeued:
            why = "preempted" if info.preempt_time else "scontrol requeue or preemption"
            return Outcome("REQUEUED", f"requeued by Slurm ({why}); the next attempt resumes from the last "
                                       f"checkpoint in output_dir", trainer_rc, server_rc, cause="requeue",
                           continues=True)
        if info and info.preempt_time:
            return Outcome("FAILED", "preempted, and the partition's PreemptMode cancels instead of requeueing",
                           trainer_rc, server_rc, cause="preemption")
        if info and info.at_walltime:
            return Outcome("FAILED", "walltime reached (cluster.time) before the USR2 checkpoint could finish",
                           trainer_rc, server_rc, cause="walltime")
        return Outcome("STOPPED", f"stopped by SIGTERM (job state {state}: cancelled)", trainer_rc, server_rc,
                       cause="cancel")

    def failed_nodes(self, info: Optional[slurm_self.JobInfo]) -> dict[str, tuple[str, str]]:
        """The job's nodes Slurm calls failed, plus those srun reported ("Node failure on X")."""
        failed = slurm_self.failed_nodes(info.nodes, KILLWAIT_QUERY_S) if info else {}
        for step in (self.trainer, self.server):
            for node in srun_node_failures(step) if step is not None else []:
                failed.setdefault(node, ("srun: Node failure", ""))
        return failed

    def node_failure(self, failed: dict, requeued: bool, trainer_rc, server_rc) -> Outcome:
        """A lost node: Slurm has requeued the job (--requeue) or ended it NODE_FAIL. Keep the requeue
        only when cluster.requeue_on_node_failure is set; otherwise cancel it and end FAILED."""
        nodes = slurm_self.describe_nodes(failed) or "a node of the job"
        if requeued and self.requeue_on_node_failure:
            return Outcome("REQUEUED", f"node failure: {nodes}; Slurm requeued the job "
                                       f"(cluster.requeue_on_node_failure=true)", trainer_rc, server_rc,
                           cause="node_failure", continues=True)
        if requeued:
            ok, message = slurm_self.cancel(self.job_id, deadline=time.monotonic() + KILLWAIT_QUERY_S)
            self.log("cancelled the requeue Slurm made (cluster.requeue_on_node_failure=false)" if ok else message)
        return Outcome("FAILED", f"node failure: {nodes}; the job ends here "
                                 f"(cluster.requeue_on_node_failure=false)", trainer_rc, server_rc,
                       cause="node_failure")

    def finish(self, outcome: Outcome) -> None:
        write_json(self.dir / RESULT_FILE, asdict(outcome))
        self.phase("finished", state=outcome.state, reason=outcome.reason.splitlines()[0])
        self.log(f"job {outcome.state}: {outcome.reason.splitlines()[0]} "
                 f"(trainer exit {outcome.trainer_rc}, server exit {outcome.server_rc})")
        if outcome.state == "FAILED" and "\n" in outcome.reason:
            self.log_file.write(outcome.reason.split("\n", 1)[1] + "\n")
        self.log_file.close()


class Interrupted(Exception):
    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


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
    sys_exit = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: sys_exit.set())
    sys_exit.wait(timeout=10)
    os._exit(0)


def run_in_slurm_job(job_dir: str) -> dict:
    """The function submitit runs in the batch step. Raises JobFailed so that the job ends FAILED."""
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    stale = _stale_result_pickle()
    if restarts and stale is not None and stale.exists():
        stale.unlink()  # an earlier run's result (a finished job requeued by hand) is not this run's
    outcome = Supervisor(Path(job_dir), backend="slurm").run()
    if outcome.state == "COMPLETED":
        return {"state": outcome.state, "attempt": outcome.attempt, "timings": outcome.timings}
    if outcome.continues:
        _leave_without_result(f"job {outcome.state}")
    info = slurm_self.job_info(os.environ.get("SLURM_JOB_ID", ""))
    if info is not None and info.restarts > restarts:
        # Slurm requeued the job while this (older) run still ended: the next run owns the result
        _leave_without_result(f"superseded by restart {info.restarts}")
    raise JobFailed(outcome.reason, outcome.cause)


class SlurmEntry:
    """Picklable callable for submitit (a class in an installed module, so nodes can import it)."""

    def __init__(self, job_dir: str):
        self.job_dir = job_dir

    def __call__(self) -> dict:
        return run_in_slurm_job(self.job_dir)

    def __repr__(self) -> str:
        return f"SlurmEntry({json.dumps(self.job_dir)})"
