"""The in-job supervisor's loop: wires the monitors (launcher/supervisor/monitors.py) and the endings
(endings.py, restart.py) to real steps, signals, files and the clock, and records the outcome.

It runs in the batch step on Slurm (through submitit, launcher/supervisor/entry.py; no outer srun) and
in the foreground with the local backend. Timeline, in supervisor.log of the attempt folder:
  (a requeued run: how the previous one ended, stale steps) -> server step and trainer step started
  together (the overlapped start: the trainer imports and loads model, data and rewards meanwhile, then
  waits in phase waiting_for_server) -> server.json published -> /health 200 -> the address handed over
  (server_ready.json) -> watch both -> (a hang: the hung component's stacks, launcher/supervisor/hangs.py)
-> the end: result.json (a typed Result) and the last line
  `job <STATE>: <reason>`. A trainer that fails while preparing ends the job at once; the server is stopped.
Signals only set a flag and wake the loop; the loop acts on them between looks. Any unexpected
exception still ends the attempt: both components stopped, result.json FAILED with cause
supervisor_error naming the exception (the traceback goes to supervisor.log).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import signal
import traceback
from pathlib import Path
from typing import Callable, Optional

from launcher.health import Health, check
from launcher.server_auth import TOKEN_ENV
from launcher.jobfolder.layout import attempt_dir as make_attempt_dir
from launcher.jobfolder.layout import load_plan, make_private
from launcher.jobfolder.logs import reason_with_log
from launcher.jobfolder.names import ATTEMPT_PREFIX, SERVER_READY, SUPERVISOR_LOG, component_log
from launcher.jobfolder.progress import read_checkpoint_done, read_heartbeat, request_checkpoint
from launcher.jobfolder.records import (Cause, Phase, Result, ServerAddress, ServerReady, State, Status, read_result,
                                       read_server, write_result, write_server_ready, write_status)
from launcher.plan.plan import Plan
from launcher.slurm.own_job import JobInfo, OwnJob, describe_nodes
from launcher.supervisor import endings, hangs
from launcher.supervisor.clock import Clock, RealClock
from launcher.supervisor.monitors import (ServerHealth, ServerSeen, ServerStartup, StartupSeen, TrainerEnd, TrainerExit,
                                          TrainerWatchdog, TransientRetry)
from launcher.supervisor.restart import cancel_stale_steps, previous_run, restart_ending
from launcher.supervisor.steps import (LocalSteps, SlurmSteps, Step, describe, srun_node_failures, srun_transient_error,
                                      step_name, stop_steps)
from launcher.supervisor.verdicts import End, Event, Healthy, NodeLost, Restart, Verdict, failed

TICK_S = 0.5  # how often exits, signals and files are looked at
STARTUP_TICK_S = 0.25  # ... while the server starts: /health too (the prepared trainer waits for the handover)
HEALTH_EVERY_S = 1.0  # /health polls while training
KILLWAIT_QUERY_S = 2.0  # scontrol calls inside Slurm's KillWait window (30 s by default, 5 s on the test cluster)
SETTLE_S = 5.0  # after its checkpoint the trainer exits by itself: how long that is waited for


class Supervisor:
    """One attempt of a job. The keyword arguments replace the real world in tests: the plan (else
    plan.json), the step runner, the clock, /health, Slurm (an OwnJob), restarts and the job id (else
    SLURM_RESTART_COUNT and SLURM_JOB_ID), and whether to install signal handlers."""

    def __init__(self, job_dir: Path, backend: str, attempt: Optional[int] = None, *, plan: Optional[Plan] = None,
                 runner=None, clock: Optional[Clock] = None, health: Callable[[str], Health] = check,
                 slurm=None, restarts: Optional[int] = None, job_id: Optional[str] = None,
                 install_signals: bool = True):
        self.job_dir = Path(job_dir)
        self.backend = backend
        self.restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) if restarts is None else restarts
        self.attempt = attempt or self.restarts + 1
        self.job_id = os.environ.get("SLURM_JOB_ID", "") if job_id is None else job_id
        self.plan = plan
        self.runner = runner
        self.clock = clock or RealClock()
        self.health = health
        self.slurm = slurm if slurm is not None else OwnJob(self.job_id)
        self.install_signals = install_signals
        self.retry = TransientRetry() if backend == "slurm" else None
        self.dir = make_attempt_dir(self.job_dir, self.attempt)
        self.t0 = self.clock.monotonic()
        self.timings: dict[str, float] = {}
        self.signalled: Optional[str] = None
        self.server: Optional[Step] = None
        self.trainer: Optional[Step] = None
        self.server_url: Optional[str] = None  # set at the handover (/health 200)
        self.server_token = secrets.token_urlsafe(32)  # this attempt's (launcher.server_auth): environment only
        self.published: Optional[ServerAddress] = None  # server.json of the server's current start
        self.first_start: dict[str, float] = {}
        self.log_file = open(self.dir / SUPERVISOR_LOG, "a", buffering=1)

    # ---------------------------------------------------------------- reporting
    def log(self, message: str) -> None:
        stamp = dt.datetime.fromtimestamp(self.clock.time()).isoformat(timespec="seconds")
        line = f"{stamp} +{self.clock.monotonic() - self.t0:7.1f}s {message}"
        self.log_file.write(line + "\n")
        print(f"supervisor: {line}", flush=True)

    def mark(self, event: str) -> float:
        self.timings[event] = round(self.clock.monotonic() - self.t0, 2)
        return self.timings[event]

    def note(self, event: Event) -> None:
        self.log(f"{event.message} after {self.mark(event.mark):.1f} s" if event.mark else event.message)

    def status(self, phase: Phase, **finished) -> None:
        write_status(self.dir, Status(phase, since=self.clock.time(), attempt=self.attempt,
                                      server_url=self.server_url, **finished))

    # ---------------------------------------------------------------- signals
    def on_signal(self, signum, frame=None) -> None:
        self.signalled = signal.Signals(signum).name if isinstance(signum, int) else str(signum)
        self.clock.wake()

    # ---------------------------------------------------------------- components
    def start(self, name: str) -> Step:
        component = self.plan.component(name)
        env = dict(os.environ)
        env.update({k: str(v) for k, v in self.plan.env.items()})
        env.update(LAUNCHER_JOB_DIR=str(self.job_dir), LAUNCHER_ATTEMPT_DIR=str(self.dir),
                   LAUNCHER_ATTEMPT=str(self.attempt), PYTHONUNBUFFERED="1")
        env.update({k: str(v) for k, v in component.env.items()})
        env.update({TOKEN_ENV: self.server_token} if self.plan.mode == "server" and self.plan.policies.server_token else {})
        step = self.runner.start(component, env, self.dir / component_log(name))
        self.first_start.setdefault(name, self.clock.monotonic())
        self.log(f"{name} started: {describe(step)} (pid {step.pid}, log {component_log(name)})")
        setattr(self, name, step)
        return step

    def restart(self, again: Restart) -> None:
        """Start a step again after its srun could not reach slurmctld (unless a signal came meanwhile)."""
        self.log(f"{again.component} step could not be started ({again.error}); slurmctld is unreachable, "
                 f"trying again in {again.delay_s:g} s")
        getattr(self, again.component).stop(0)
        self.clock.wait(again.delay_s)
        if not self.signalled:
            self.start(again.component)

    def stop_all(self, why: str, grace_s: Optional[float] = None) -> tuple[Optional[int], Optional[int]]:
        """Both components at once: SIGTERM to both, one shared grace, then SIGKILL."""
        steps = [s for s in (self.trainer, self.server) if s is not None]
        running = [s for s in steps if s.poll() is None]
        codes = stop_steps(steps, self.plan.policies.stop_grace_s if grace_s is None else grace_s, self.clock)
        for step in running:
            self.log(f"{step.name} stopped ({why}), exit code {codes[step.name]}")
        return codes.get("trainer"), codes.get("server")

    def srun_error(self, step: Step) -> Optional[str]:
        return srun_transient_error(step) if self.backend == "slurm" else None

    # ---------------------------------------------------------------- the whole attempt
    def run(self) -> Result:
        umask = os.umask(0o077)  # job folders are private: every file the job writes from here on is the user's alone
        try:
            if self.install_signals:
                for sig in (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, self.on_signal)
            try:
                end = self.attempt_run()
            except Exception as error:  # noqa: BLE001 - the attempt still ends with a result
                end = self.supervisor_error(error)
            return self.finish(end)
        finally:
            os.umask(umask)

    def attempt_run(self) -> End:
        if self.plan is None:
            self.plan = load_plan(self.job_dir)
        if self.runner is None:
            self.runner = SlurmSteps(self.plan) if self.backend == "slurm" else LocalSteps(self.plan)
        self.log(f"attempt {self.attempt} of job {self.job_id or 'local'} "
                 f"({self.plan.backend}, {self.plan.mode} mode) in {self.dir}")
        make_private(self.job_dir)
        end = self.restart_checks()
        if end is not None:
            return end
        if self.plan.mode == "server":
            self.status(Phase.SERVER_STARTING)
            self.start("server")
        else:
            self.status(Phase.TRAINER_RUNNING)
        self.start("trainer")  # with the server: it prepares while the server starts, then waits for the handover
        self.mark("trainer_started")
        return self.watch()

    def restart_checks(self) -> Optional[End]:
        if self.backend != "slurm" or self.restarts == 0:
            return None
        before = read_result(self.job_dir / f"{ATTEMPT_PREFIX}{self.attempt - 1}")
        runs = [] if before is not None and not before.provisional else self.slurm.previous_runs()
        previous, node_failure = previous_run(self.attempt, before, runs)
        self.log(f"restart {self.restarts} of job {self.job_id}: {previous}")
        cancel_stale_steps(self.slurm, self.clock, self.log)
        return restart_ending(self.restarts, previous, node_failure, self.plan.policies)

    def watch(self) -> End:
        """Both components, from their start to the attempt's end: the server's startup until /health 200
        and the handover, then its health; the trainer's exit and heartbeat throughout."""
        policies, now = self.plan.policies, self.clock.monotonic()
        startup = ServerStartup(policies.startup_timeout_s, now, self.retry) if self.server is not None else None
        watchdog = TrainerWatchdog(policies.watchdog_timeout_s, now, awaiting_server=startup is not None)
        trainer_end = TrainerEnd(self.first_start["trainer"], self.retry)
        server: Optional[ServerHealth] = None
        next_health = now
        while not self.signalled:
            now = self.clock.monotonic()
            ask = now >= next_health
            next_health = now + HEALTH_EVERY_S if ask else next_health
            rc = self.trainer.poll()
            if rc is not None:
                verdict = trainer_end.update(now, self.trainer_exit(rc))
                if isinstance(verdict, Restart):
                    self.restart(verdict)
                    watchdog.reset(self.clock.monotonic())
                    continue
                return self.decided(verdict)
            if startup is not None:
                verdict = startup.update(now, self.startup_seen())
                if isinstance(verdict, Healthy):
                    self.hand_over(verdict.url)
                    startup, server = None, ServerHealth(verdict.url, policies.health_grace_s, now)
                    watchdog.handed_over(now)
                elif isinstance(verdict, Restart):
                    self.restart(verdict)
                    self.published = None
                    continue
                elif verdict is not None:
                    return verdict
            elif server is not None:
                answer = self.health(self.server_url) if ask else None
                verdict = server.update(now, ServerSeen(self.server.poll(), answer))
                if verdict is not None:
                    return verdict
            verdict = watchdog.update(now, read_heartbeat(self.dir))
            if isinstance(verdict, Event):
                self.note(verdict)
            elif verdict is not None:
                return verdict
            self.clock.wait(TICK_S if startup is None else STARTUP_TICK_S)
        return self.on_interrupt()

    def startup_seen(self) -> StartupSeen:
        """What the server's startup monitor is told: its exit, server.json, /health (every STARTUP_TICK_S)."""
        rc = self.server.poll()
        if self.published is None and rc is None:
            self.published = read_server(self.dir)
            if self.published is not None:
                self.log(f"server address published: {self.published.url} (host {self.published.host})")
        url = self.published.url if self.published is not None else None
        return StartupSeen(rc, self.srun_error(self.server) if rc is not None else None, url,
                           self.health(url) if url and rc is None else None)

    def hand_over(self, url: str) -> None:
        """/health answered 200: server_ready.json (atomic) tells the waiting trainer where to connect."""
        self.server_url = url
        after = self.mark("server_healthy")
        host = self.published.host if self.published is not None else ""
        write_server_ready(self.dir, ServerReady(url=url, host=host, healthy_after_s=after, time=self.clock.time()))
        self.status(Phase.TRAINER_RUNNING)
        self.log(f"server healthy after {after:.1f} s at {url}; address handed to the trainer ({SERVER_READY})")

    def trainer_exit(self, rc: int) -> TrainerExit:
        nodes = tuple(srun_node_failures(self.trainer)) if self.backend == "slurm" else ()
        return TrainerExit(rc, self.srun_error(self.trainer), nodes, read_heartbeat(self.dir),
                           server_starting=self.server is not None and self.server_url is None)

    def decided(self, verdict: Verdict) -> End:
        """An End as it is; a node srun lost: ask Slurm what it did about it."""
        if not isinstance(verdict, NodeLost):
            return verdict
        self.log(f"trainer ended first with exit code {verdict.rc}")
        self.mark("trainer_ended")
        self.stop_all("trainer ended")
        info = self.slurm.info(KILLWAIT_QUERY_S)
        return endings.node_failure_ending({**verdict.nodes, **self.failed_nodes(info)},
                                           endings.requeued_by_slurm(info, self.restarts),
                                           self.plan.policies.requeue_on_node_failure, stop_why="trainer ended")

    def failed_nodes(self, info: Optional[JobInfo]) -> dict[str, tuple[str, str]]:
        """The job's nodes Slurm calls failed, plus those srun reported ("Node failure on X")."""
        found = self.slurm.failed_nodes(info.nodes, KILLWAIT_QUERY_S) if info else {}
        for step in (self.trainer, self.server):
            for node in srun_node_failures(step) if step is not None else []:
                found.setdefault(node, ("srun: Node failure", ""))
        return found

    # ---------------------------------------------------------------- signals: how they end the attempt
    def on_interrupt(self) -> End:
        if self.backend == "slurm" and self.signalled == "SIGUSR2":
            return self.on_usr2()
        if self.backend == "slurm" and self.signalled == "SIGTERM":
            return self.on_sigterm()
        return endings.stopped_by(self.signalled)

    def on_usr2(self) -> End:
        """Walltime (--signal=B:USR2@signal_before_end_s) or preemption (partition GraceTime with
        preempt_send_user_signal): checkpoint within what is left of the run, then requeue."""
        policies = self.plan.policies
        if self.trainer is not None and self.trainer.poll() is not None:
            verdict = TrainerEnd(self.first_start["trainer"], self.retry).update(
                self.clock.monotonic(), self.trainer_exit(self.trainer.poll()))
            if not isinstance(verdict, Restart):  # it ended as the signal came: that is the end, no requeue
                return self.decided(verdict)
        budget = endings.usr2_budget(self.clock.time(), self.slurm.info(), policies)
        self.log(f"USR2: {'preempted' if budget.preempted else 'walltime near'}, "
                 f"Slurm ends this run in {budget.left_s:.0f} s")
        beat = read_heartbeat(self.dir)
        if endings.nothing_to_save(beat):
            self.log(f"the trainer has trained nothing yet (phase {beat.phase if beat else None}): no checkpoint")
            done = None
        else:
            done = self.checkpoint(f"{budget.cause.value} signal (USR2)", budget.checkpoint_s)
        self.stop_all(f"{budget.cause.value} signal (USR2)", budget.stop_grace_s)
        if self.signalled == "SIGTERM":  # Slurm's end came first
            return self.on_sigterm()
        end = endings.usr2_without_requeue(budget, done, self.restarts, policies.max_requeues)
        if end is not None:
            return end
        ok, message = self.slurm.requeue(deadline=self.clock.monotonic() + max(10.0, budget.end - self.clock.time()))
        return endings.usr2_requeued(budget, done, self.restarts, policies.max_requeues, ok, message)

    def checkpoint(self, why: str, budget_s: float) -> Optional[dict]:
        """Ask the trainer to save; checkpoint.done, or None after budget_s. A SIGTERM cuts the wait short."""
        if self.trainer is None or self.trainer.poll() is not None:
            return None
        request_checkpoint(self.dir, why)
        self.log(f"{why}: asked the trainer for a checkpoint (waiting up to {budget_s:.0f} s; "
                 f"cluster.checkpoint_timeout_s={self.plan.policies.checkpoint_timeout_s:g})")
        deadline = self.clock.monotonic() + budget_s
        done = read_checkpoint_done(self.dir)
        while done is None and self.clock.monotonic() < deadline and self.trainer.poll() is None \
                and self.signalled != "SIGTERM":
            self.clock.wait(TICK_S)
            done = read_checkpoint_done(self.dir)
        done = done or read_checkpoint_done(self.dir)  # it may have exited right after saving
        self.log(f"checkpoint saved at step {done.get('step')}: {done.get('checkpoint')}" if done
                 else "no checkpoint within the time limit")
        settle = self.clock.monotonic() + min(SETTLE_S, max(0.0, deadline - self.clock.monotonic()))
        while done and self.trainer.poll() is None and self.clock.monotonic() < settle and self.signalled != "SIGTERM":
            self.clock.wait(0.2)
        return done

    def on_sigterm(self) -> End:
        """Slurm is ending this run now (KillWait seconds until SIGKILL): record first, then find out
        why, stop both quickly. A requeued job resumes from its last checkpoint in output_dir."""
        write_result(self.dir, Result(State.STOPPED, endings.PROVISIONAL_REASON, Cause.CANCEL, attempt=self.attempt,
                                      timings=dict(self.timings), provisional=True))
        info = self.slurm.info(KILLWAIT_QUERY_S)
        self.stop_all("SIGTERM from Slurm", endings.KILLWAIT_STOP_S)
        found = self.failed_nodes(info)
        last_run = None
        if not found and endings.requeued_by_slurm(info, self.restarts):
            runs = [r for r in self.slurm.previous_runs(KILLWAIT_QUERY_S) if r["End"] != "Unknown"]
            last_run = runs[-1]["State"] if runs else None
        found = endings.with_accounting(info, self.restarts, found, last_run)
        self.log(f"SIGTERM: job state {info.state if info else 'unknown (scontrol did not answer)'}, restarts "
                 f"{info.restarts if info else '?'}, failed nodes: {describe_nodes(found) or 'none'}")
        return endings.sigterm_ending(info, self.restarts, found, self.clock.time(),
                                      self.plan.policies.requeue_on_node_failure)

    # ---------------------------------------------------------------- the end
    def supervisor_error(self, error: Exception) -> End:
        self.log_file.write(traceback.format_exc())
        self.log(f"supervisor error: {type(error).__name__}: {error}")
        return failed(Cause.SUPERVISOR_ERROR, f"supervisor error: {type(error).__name__}: {error}",
                      stop_why="supervisor error")

    def finish(self, end: End) -> Result:
        """Diagnose a hang, stop both components, cancel a requeue that must not stand, record the Result."""
        if end.log:
            self.log(end.log)
        if end.mark:
            self.mark(end.mark)
        found = hangs.diagnose(end, self.dir, self.backend, getattr(self, end.diagnose or "", None), self.slurm,
                               step_name(self.plan, end.diagnose or ""), self.clock, self.log,
                               self.runner) if self.plan else None
        try:
            trainer_rc, server_rc = self.stop_all(end.stop_why, end.stop_grace_s) if self.plan else (None, None)
            if end.cancel_requeue:
                ok, message = self.slurm.cancel(deadline=self.clock.monotonic() + KILLWAIT_QUERY_S)
                self.log("cancelled the requeue Slurm made (cluster.requeue_on_node_failure=false)" if ok else message)
        except Exception as error:  # noqa: BLE001 - stopping failed: kill what can be killed, say why
            end = self.supervisor_error(error)
            trainer_rc, server_rc = (self._kill(self.trainer), self._kill(self.server))
        hangs.remove_empty_stacks(self.dir)  # every process opened one; only those asked for hold anything
        reason = end.reason
        if end.tail:
            reason = reason_with_log(reason, self.dir / component_log(end.tail))  # leads with the root cause
        reason = hangs.with_capture(reason, found)
        result = Result(end.state, reason, end.cause, trainer_rc, server_rc, self.attempt, dict(self.timings),
                        continues=end.continues)
        write_result(self.dir, result)
        self.status(Phase.FINISHED, state=result.state, reason=result.summary)
        self.log(f"job {result.state.value}: {result.summary} (trainer exit {trainer_rc}, server exit {server_rc})")
        if result.state is State.FAILED and "\n" in reason:
            self.log_file.write(reason.split("\n", 1)[1] + "\n")
        self.log_file.close()
        return result

    @staticmethod
    def _kill(step: Optional[Step]) -> Optional[int]:
        try:
            return step.kill() if step is not None else None
        except Exception:  # noqa: BLE001
            return None
