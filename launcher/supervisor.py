"""The in-job supervisor: ties the server's and the trainer's lifecycles together.

It runs in the batch step on Slurm (through submitit, no outer srun) and in the foreground with
the local backend. Timeline, in supervisor.log of the attempt folder:
  server step started -> server.json published -> /health 200 (bounded by startup_timeout_s)
  -> trainer step started with the server URL -> watch both -> end
Endings: the trainer ends -> stop the server, the job ends with the trainer's result; the server
exits, or stops answering /health for health_grace_s -> stop the trainer, FAILED; the trainer
makes no progress (heartbeat) for watchdog_timeout_s -> FAILED naming the stalled phase;
USR2 (walltime or preemption) -> ask the trainer for a checkpoint, stop both, requeue.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from .jobdir import attempt_dir as make_attempt_dir
from .jobdir import load_plan, read_json, write_json
from .plan import Plan
from .progress import CHECKPOINT_DONE, read_heartbeat, request_checkpoint
from .steps import LocalSteps, SlurmSteps, Step, describe

TICK_S = 0.5  # how often exits, signals and files are looked at
HEALTH_EVERY_S = 1.0  # /health polls, during startup and while training
RESULT_FILE = "result.json"
STATUS_FILE = "status.json"


class JobFailed(RuntimeError):
    """The job ended FAILED; the message is the reason (also in result.json and supervisor.log)."""


@dataclass
class Outcome:
    state: str  # COMPLETED | FAILED | REQUEUED | STOPPED
    reason: str
    trainer_rc: Optional[int] = None
    server_rc: Optional[int] = None
    attempt: int = 1
    timings: dict = field(default_factory=dict)


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


class Supervisor:
    def __init__(self, job_dir: Path, backend: str, attempt: Optional[int] = None):
        self.job_dir = Path(job_dir)
        self.plan: Plan = load_plan(self.job_dir)
        self.backend = backend
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        self.attempt = attempt or restarts + 1
        self.restarts = restarts
        self.dir = make_attempt_dir(self.job_dir, self.attempt)
        self.runner = SlurmSteps(self.plan) if backend == "slurm" else LocalSteps(self.plan)
        self.t0 = time.monotonic()
        self.timings: dict[str, float] = {}
        self.signalled: Optional[str] = None
        self.wake = threading.Event()
        self.server: Optional[Step] = None
        self.trainer: Optional[Step] = None
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
        self.log(f"{name} started: {describe(step)} (pid {step.pid}, log {name}.log)")
        return step

    def stop(self, step: Optional[Step], why: str) -> Optional[int]:
        if step is None:
            return None
        running = step.poll() is None
        rc = step.stop(self.plan.policies.stop_grace_s)
        if running:
            self.log(f"{step.name} stopped ({why}), exit code {rc}")
        return rc

    def stop_all(self, why: str) -> tuple[Optional[int], Optional[int]]:
        trainer_rc = self.stop(self.trainer, why)
        server_rc = self.stop(self.server, why)
        return trainer_rc, server_rc

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
                raise JobFailed(f"server exited with code {rc} before becoming healthy; last lines of server.log:\n"
                                f"{tail(self.dir / 'server.log')}")
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
                                f"last lines of server.log:\n{tail(self.dir / 'server.log')}")
            self.wake.wait(HEALTH_EVERY_S)

    def watch(self, url: Optional[str]) -> Outcome:
        policies = self.plan.policies
        trainer_started = time.monotonic()
        last_health = time.monotonic()
        next_health = 0.0
        refusals = 0
        last_progress = (trainer_started, "start", None)  # (when, phase, step)
        last_beat_time = None
        while True:
            if self.signalled:
                raise Interrupted(self.signalled)
            trainer_rc = self.trainer.poll()
            if trainer_rc is not None:
                self.mark("trainer_ended")
                self.log(f"trainer ended first with exit code {trainer_rc}")
                server_rc = self.stop(self.server, "trainer ended")
                if trainer_rc == 0:
                    return Outcome("COMPLETED", "trainer finished", trainer_rc, server_rc)
                return Outcome("FAILED", f"trainer exited with code {trainer_rc}; last lines of trainer.log:\n"
                                          f"{tail(self.dir / 'trainer.log')}", trainer_rc, server_rc)
            if self.server is not None:
                server_rc = self.server.poll()
                if server_rc is not None:
                    self.mark("server_ended")
                    self.log(f"server ended first with exit code {server_rc}")
                    trainer_rc = self.stop(self.trainer, "server died")
                    return Outcome("FAILED", f"server exited with code {server_rc} during training; last lines "
                                             f"of server.log:\n{tail(self.dir / 'server.log')}",
                                   trainer_rc, server_rc)
                now = time.monotonic()
                if url and now >= next_health:
                    next_health = now + HEALTH_EVERY_S
                    answer = health(url)
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
                                       trainer_rc, server_rc)
                    elif now - last_health > policies.health_grace_s:
                        self.log(f"server /health silent for {now - last_health:.0f} s")
                        trainer_rc, server_rc = self.stop_all("server unresponsive")
                        return Outcome("FAILED", f"server stopped answering /health for more than "
                                                 f"server.health_grace_s={policies.health_grace_s:g} s",
                                       trainer_rc, server_rc)
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
                               trainer_rc, server_rc)
            self.wake.wait(TICK_S)

    def checkpoint_and_stop(self, why: str) -> tuple[Optional[int], Optional[int], bool]:
        """Ask the trainer to save (bounded), then stop both. (trainer rc, server rc, saved)."""
        saved = False
        if self.trainer is not None and self.trainer.poll() is None:
            request_checkpoint(self.dir, why)
            self.log(f"{why}: asked the trainer for a checkpoint "
                     f"(up to cluster.checkpoint_timeout_s={self.plan.policies.checkpoint_timeout_s:g} s)")
            deadline = time.monotonic() + self.plan.policies.checkpoint_timeout_s
            while time.monotonic() < deadline and self.trainer.poll() is None:
                if (self.dir / CHECKPOINT_DONE).exists():
                    break
                time.sleep(TICK_S)
            saved = (self.dir / CHECKPOINT_DONE).exists()
            self.log("checkpoint saved" if saved else "no checkpoint within the time limit")
        trainer_rc, server_rc = self.stop_all(why)
        return trainer_rc, server_rc, saved

    # ---------------------------------------------------------------- the whole run
    def run(self) -> Outcome:
        self.install_signals()
        plan = self.plan
        self.log(f"attempt {self.attempt} of job {os.environ.get('SLURM_JOB_ID', 'local')} "
                 f"({plan.backend}, {plan.mode} mode) in {self.dir}")
        url = None
        try:
            try:
                if plan.mode == "server":
                    self.server = self.start("server")
                    url = self.wait_server()
                self.phase("trainer_running", server_url=url)
                extra = {"LAUNCHER_SERVER_URL": url} if url else {}
                self.trainer = self.start("trainer", **extra)
                self.mark("trainer_started")
                outcome = self.watch(url)
            except JobFailed as failure:
                trainer_rc, server_rc = self.stop_all("job failed")
                outcome = Outcome("FAILED", str(failure), trainer_rc, server_rc)
            except Interrupted as interrupt:
                outcome = self.on_interrupt(interrupt.signal_name)
        finally:
            self.stop_all("supervisor exiting")
        outcome.attempt = self.attempt
        outcome.timings = self.timings
        self.finish(outcome)
        return outcome

    def on_interrupt(self, name: str) -> Outcome:
        if name == "SIGUSR2" and self.backend == "slurm":
            trainer_rc, server_rc, saved = self.checkpoint_and_stop("walltime or preemption signal (USR2)")
            if self.restarts < self.plan.policies.max_requeues:
                job_id = os.environ.get("SLURM_JOB_ID", "")
                result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
                if result.returncode == 0:
                    return Outcome("REQUEUED", f"requeued after USR2 (restart {self.restarts + 1} of at most "
                                               f"{self.plan.policies.max_requeues}); checkpoint "
                                               f"{'saved' if saved else 'not saved'}", trainer_rc, server_rc)
                return Outcome("FAILED", f"scontrol requeue failed: {result.stderr.strip()}", trainer_rc, server_rc)
            return Outcome("FAILED", f"USR2 (walltime or preemption) after {self.restarts} requeues: "
                                     f"cluster.max_requeues={self.plan.policies.max_requeues} reached",
                           trainer_rc, server_rc)
        trainer_rc, server_rc = self.stop_all(f"{name} received")
        return Outcome("STOPPED", f"stopped by {name}", trainer_rc, server_rc)

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


def run_in_slurm_job(job_dir: str) -> dict:
    """The function submitit runs in the batch step. Raises JobFailed so that the job ends FAILED."""
    outcome = Supervisor(Path(job_dir), backend="slurm").run()
    if outcome.state == "REQUEUED":
        # Slurm ends this batch step for the requeue (SIGTERM); until then, leave no result behind
        terminated = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: terminated.set())
        terminated.wait(timeout=300)
        os._exit(0)
    if outcome.state != "COMPLETED":
        raise JobFailed(outcome.reason)
    return {"state": outcome.state, "attempt": outcome.attempt, "timings": outcome.timings}


class SlurmEntry:
    """Picklable callable for submitit (a class in an installed module, so nodes can import it)."""

    def __init__(self, job_dir: str):
        self.job_dir = job_dir

    def __call__(self) -> dict:
        return run_in_slurm_job(self.job_dir)

    def __repr__(self) -> str:
        return f"SlurmEntry({json.dumps(self.job_dir)})"
