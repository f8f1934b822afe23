"""The supervisor's watchers, as pure decision objects: each is told the time and what was seen, and
answers with a verdict (launcher/supervisor/verdicts.py) or None. None of them reads a file, asks
/health or looks at a clock; the loop (launcher/supervisor/loop.py) does that and hands them the
observations, so tests drive them with made-up ones.

- ServerStartup: server.json, then /health 200, within server.startup_timeout_s; a server step that
  exits first fails the job, unless its srun could not reach slurmctld (TransientRetry: start it again).
- ServerHealth: while training, the server step's exit, two refused /health in a row (its process is
  gone), or no 200 for longer than server.health_grace_s (hung or frozen) ends the job.
- TrainerWatchdog: any new heartbeat is progress; none for trainer.watchdog_timeout_s ends the job,
  naming the phase and step that stalled (and the reward function, when the heartbeat says one is being
  computed); the trainer is then diagnosed (stacks, launcher/supervisor/hangs.py). A trainer waiting for
  the server's address (phase waiting_for_server, before the handover) is not hung: server.startup_timeout_s bounds that wait.
- TrainerEnd: the trainer step's exit: COMPLETED only with exit code 0 and a heartbeat saying done
  (srun exits 0 when a node of its step fails); srun's "Node failure on X" asks Slurm what it did. A
  trainer that fails while the server is still starting ends the job at once (it says so). A trainer that
  ended itself because a reward function ran past reward.timeout_s is a hang in that reward (its heartbeat
  names it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from launcher.health import Health
from launcher.jobfolder.progress import Heartbeat, TrainerPhase
from launcher.jobfolder.records import Cause, State
from launcher.supervisor.verdicts import End, Event, Healthy, NodeLost, Restart, Verdict, failed

CONTROLLER_RETRY_S = 300.0  # how long after its first start a step whose srun cannot reach slurmctld is started again
RESTART_DELAY_S = 5.0  # between such starts
NO_HEARTBEAT = "start (no heartbeat yet)"
REFUSALS = 2  # refused /health in a row that mean the server process is gone


@dataclass(frozen=True)
class TransientRetry:
    """A step whose srun says slurmctld did not answer never ran: start it again, within window_s."""

    window_s: float = CONTROLLER_RETRY_S
    delay_s: float = RESTART_DELAY_S

    def decide(self, component: str, srun_error: Optional[str], now: float, first_started: float) -> Optional[Restart]:
        if srun_error is None or now - first_started > self.window_s:
            return None
        return Restart(component, srun_error, self.delay_s)


@dataclass(frozen=True)
class StartupSeen:
    rc: Optional[int]  # the server step's exit code; None while it runs
    srun_error: Optional[str] = None  # srun's "slurmctld did not answer" line, once the step ended
    url: Optional[str] = None  # from server.json, once published
    health: Optional[Health] = None  # /health, once the url is known


class ServerStartup:
    def __init__(self, timeout_s: float, started: float, retry: Optional[TransientRetry] = None):
        self.timeout_s = timeout_s
        self.started = started
        self.retry = retry

    def update(self, now: float, seen: StartupSeen) -> Verdict:
        if seen.rc is not None:
            again = self.retry.decide("server", seen.srun_error, now, self.started) if self.retry else None
            return again or failed(Cause.SERVER_FAILED, f"server exited with code {seen.rc} before becoming healthy",
                                   tail="server", stop_why="server died")
        if seen.url and seen.health is Health.OK:
            return Healthy(seen.url)
        if now - self.started > self.timeout_s:
            return failed(Cause.SERVER_FAILED, f"server not healthy after server.startup_timeout_s={self.timeout_s:g} s",
                          tail="server", stop_why="server not healthy in time", diagnose="server")
        return None


@dataclass(frozen=True)
class ServerSeen:
    rc: Optional[int]  # the server step's exit code; None while it runs
    health: Optional[Health] = None  # None: /health was not asked this time


class ServerHealth:
    def __init__(self, url: str, grace_s: float, started: float):
        self.url = url
        self.grace_s = grace_s
        self.last_ok = started
        self.refusals = 0

    def update(self, now: float, seen: ServerSeen) -> Verdict:
        if seen.rc is not None:
            return failed(Cause.SERVER_FAILED, f"server exited with code {seen.rc} during training", tail="server",
                          log=f"server ended first with exit code {seen.rc}", mark="server_ended", stop_why="server died")
        if seen.health is None:
            return None
        self.refusals = self.refusals + 1 if seen.health is Health.REFUSED else 0
        if seen.health is Health.OK:
            self.last_ok = now
            return None
        if self.refusals >= REFUSALS:
            # the API server is gone even if its step lingers (orphaned engine processes keep an srun
            # step alive until Slurm reaps them)
            return failed(Cause.SERVER_FAILED, f"server process died (connection refused at {self.url})", tail="server",
                          log="server refuses connections: its process is gone", stop_why="server died")
        silent = now - self.last_ok
        if silent > self.grace_s:
            # a frozen process still accepts connections (the kernel's listen backlog): timeouts, not refusals
            return failed(Cause.HANG, f"server stopped answering /health for more than server.health_grace_s="
                                      f"{self.grace_s:g} s (hung or frozen; it still accepts connections)",
                          log=f"server /health silent for {silent:.0f} s (hung or frozen server)",
                          stop_why="server unresponsive", diagnose="server")
        return None


class TrainerWatchdog:
    """`awaiting_server`: a server is starting and its address is not handed over yet (handed_over)."""

    def __init__(self, timeout_s: float, started: float, awaiting_server: bool = False):
        self.timeout_s = timeout_s
        self.beat_time: Optional[float] = None
        self.first_step_seen = False
        self.ready_seen = False
        self.awaiting_server = awaiting_server
        self.reset(started)

    def handed_over(self, now: float) -> None:
        """The server's address went to the trainer: from now on it has to show progress again."""
        self.awaiting_server = False
        self.last_progress = now

    def reset(self, now: float) -> None:
        """A trainer step started (again): no progress from it yet. The heartbeat already there is old."""
        self.last_progress = now
        self.phase: Optional[str] = NO_HEARTBEAT
        self.step: Optional[int] = None
        self.reward: Optional[str] = None  # the reward function the last heartbeat says is being computed

    def update(self, now: float, beat: Optional[Heartbeat]) -> Verdict:
        event = None
        if beat is not None and beat.time != self.beat_time:  # any new heartbeat is progress
            self.beat_time, self.last_progress = beat.time, now
            self.phase, self.step = beat.phase, beat.step
            self.reward = beat.get("reward") if beat.get("stage") == "reward" else None
            if beat.phase == TrainerPhase.STEP.value and beat.step and not self.first_step_seen:
                self.first_step_seen = True
                event = Event("first training step done", mark="first_step")
            elif beat.phase == TrainerPhase.WAITING_FOR_SERVER.value and not self.ready_seen:
                self.ready_seen = True
                event = Event("trainer prepared, waiting for the server", mark="trainer_ready")
        if self.awaiting_server and self.phase == TrainerPhase.WAITING_FOR_SERVER.value:
            self.last_progress = now  # it waits for the supervisor, not hung: the startup timeout bounds this
        silent = now - self.last_progress
        if silent > self.timeout_s:
            at = f" at step {self.step}" if self.step is not None else ""
            where = f"reward function {self.reward!r}{at} (phase {self.phase!r})" if self.reward \
                else f"phase {self.phase!r}{at}"
            return failed(Cause.HANG, f"trainer made no progress for more than trainer.watchdog_timeout_s="
                                      f"{self.timeout_s:g} s; stalled in {where}",
                          log=f"trainer made no progress for {silent:.0f} s (phase {self.phase}, step {self.step}"
                              f"{', reward ' + self.reward if self.reward else ''})",
                          stop_why="trainer hung", diagnose="trainer")
        return event


@dataclass(frozen=True)
class TrainerExit:
    rc: int
    srun_error: Optional[str] = None  # srun's "slurmctld did not answer" line
    node_failures: tuple[str, ...] = ()  # nodes in srun's "Node failure on X" lines
    heartbeat: Optional[Heartbeat] = None  # the trainer's last
    server_starting: bool = False  # it ended before the server's address was handed over


def stalled_reward(beat: Heartbeat) -> str:
    """The reason of a trainer that ended itself because a reward function ran past reward.timeout_s
    (launcher/train/scoring.py; its last heartbeat says which, where, and where its stacks are)."""
    at = f" at step {beat.step}" if beat.step is not None else ""
    where = f", stuck at {beat.get('stuck_at')}" if beat.get("stuck_at") else ""
    stacks = f"; Python stacks in {beat.get('stacks')}" if beat.get("stacks") else ""
    limit = beat.get("reward_timeout_s")
    limit = f"{limit:g}" if isinstance(limit, (int, float)) else "?"
    return (f"reward function {beat.get('stalled_reward')!r} stalled: no result within reward.timeout_s="
            f"{limit} s{at}{where}{stacks}")


class TrainerEnd:
    def __init__(self, started: float, retry: Optional[TransientRetry] = None):
        self.started = started  # the trainer's first start
        self.retry = retry

    def update(self, now: float, seen: TrainerExit) -> Verdict:
        if seen.rc != 0 and self.retry is not None:
            again = self.retry.decide("trainer", seen.srun_error, now, self.started)
            if again is not None:
                return again
        ended = dict(log=f"trainer ended first with exit code {seen.rc}", mark="trainer_ended", stop_why="trainer ended")
        if seen.node_failures:
            return NodeLost({node: ("srun: Node failure", "") for node in seen.node_failures}, seen.rc)
        stalled = seen.heartbeat.get("stalled_reward") if seen.heartbeat is not None and seen.rc != 0 else None
        if stalled:
            return failed(Cause.HANG, stalled_reward(seen.heartbeat), tail="trainer", **ended)
        if seen.rc != 0:
            # failing while it prepared (imports, model, data, rewards) ends the job without waiting for the server
            during = " while the server was starting" if seen.server_starting else ""
            return failed(Cause.TRAINER_FAILED, f"trainer exited with code {seen.rc}{during}", tail="trainer", **ended)
        beat = seen.heartbeat
        if beat is None or not beat.done:
            # srun reports 0 when a node of its step failed ("srun: error: Node failure on ...")
            return failed(Cause.TRAINER_FAILED, f"the trainer step ended with exit code 0 but the trainer never reported "
                                                f"finishing (last heartbeat: phase {beat.phase if beat else None!r}, "
                                                f"step {beat.step if beat else None})", tail="trainer", **ended)
        return End(State.COMPLETED, Cause.FINISHED, "trainer finished", **ended)
