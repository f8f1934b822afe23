"""The supervisor in-process: fake steps, a fake clock (time moves only when the loop waits), fake /health
and a fake Slurm, so every row of docs/faults.md that the supervisor decides runs in milliseconds.
The real-cluster counterparts are in tests/integration/test_faults.py and test_core_path.py."""

from __future__ import annotations

import heapq
import itertools
import signal
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

import pytest

from launcher.health import Health
from launcher.jobfolder.jsonio import write_json_atomic
from launcher.jobfolder.names import CHECKPOINT_DONE, CHECKPOINT_REQUEST, HEARTBEAT, SERVER_READY
from launcher.jobfolder.progress import Heartbeat
from launcher.jobfolder.records import (Cause, Phase, Result, ServerAddress, State, read_result, read_server_ready,
                                       read_status, write_result, write_server)
from launcher.plan.plan import Component, DataSpec, ModelSpec, Plan, Policies, RewardSpec
from launcher.slurm.own_job import JobInfo
from launcher.slurm.transient import srun_transient_line
from launcher.supervisor import endings, monitors
from launcher.supervisor.loop import Supervisor
from launcher.supervisor.verdicts import End, Healthy, Restart

URL = "http://10.0.0.1:8000"
CONTROLLER_AWAY = "srun: error: Unable to confirm allocation for job 5: Unable to contact slurm controller (connect failure)"


class FakeClock:
    """Time advances only when the code under test sleeps or waits; events scheduled with `at` run
    when the time passes them (a step exits, a heartbeat is written, a signal arrives)."""

    LIMIT_S = 100_000.0  # a loop that never ends fails the test instead of hanging it

    def __init__(self, epoch: float = 1_800_000_000.0):
        self.now, self.epoch, self.woken = 0.0, epoch, False
        self.events: list = []
        self.order = itertools.count()

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.epoch + self.now

    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self.events, (t, next(self.order), fn))

    def every(self, start: float, period: float, stop: float, fn: Callable[[int], None]) -> None:
        for n, t in enumerate(itertools.takewhile(lambda t: t < stop, itertools.count(start, period))):
            self.at(t, lambda n=n: fn(n))

    def _run_until(self, target: float, stop_on_wake: bool) -> None:
        assert target < self.LIMIT_S, "the supervisor never ended"
        while self.events and self.events[0][0] <= target:
            t, _, fn = heapq.heappop(self.events)
            self.now = max(self.now, t)
            fn()
            if stop_on_wake and self.woken:
                break
        else:
            self.now = max(self.now, target)
        self.woken = False

    def sleep(self, seconds: float) -> None:
        self._run_until(self.now + seconds, stop_on_wake=False)

    def wait(self, seconds: float) -> None:
        self._run_until(self.now + seconds, stop_on_wake=True)

    def wake(self) -> None:
        self.woken = True


class FakeStep:
    def __init__(self, name: str, log: Path, ignores_term: bool = False):
        self.name, self.pid, self.log = name, 4000 + len(name), log
        self.rc: Optional[int] = None
        self.ignores_term = ignores_term
        self.terminated = self.killed = False

    def exit(self, rc: int, output: str = "") -> None:
        if self.rc is None:
            if output:
                with open(self.log, "a") as f:
                    f.write(output + "\n")
            self.rc = rc

    def poll(self) -> Optional[int]:
        return self.rc

    def terminate(self) -> None:
        if self.rc is None:
            self.terminated = True
            if not self.ignores_term:
                self.exit(-15)

    def kill(self) -> Optional[int]:
        self.killed = True
        self.exit(-9)
        return self.rc

    def stop(self, grace_s: float) -> Optional[int]:
        self.terminate()
        return self.kill()

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


class FakeRunner:
    """Starts FakeSteps; `scripts[name]` says what each start of that component does (the last one repeats)."""

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.scripts: dict[str, list[Callable[[FakeStep], None]]] = {"server": [], "trainer": []}
        self.started: list[FakeStep] = []
        self.envs: list[dict] = []

    def start(self, component: Component, env: dict, log: Path) -> FakeStep:
        step = FakeStep(component.name, Path(log))
        self.started.append(step)
        self.envs.append(env)
        scripts = self.scripts[component.name]
        if scripts:
            (scripts.pop(0) if len(scripts) > 1 else scripts[0])(step)
        return step

    def starts(self, name: str) -> list[FakeStep]:
        return [s for s in self.started if s.name == name]


class FakeSlurm:
    def __init__(self):
        self.job: Optional[JobInfo] = None
        self.failed: dict = {}
        self.runs: list[dict] = []
        self.requeue_answer = (True, "")
        self.steps: list[str] = []
        self.calls: list = []
        self.on_info: Optional[Callable[[], None]] = None

    def info(self, timeout_s: float = 5.0) -> Optional[JobInfo]:
        self.calls.append("info")
        if self.on_info:
            self.on_info()
        return self.job

    def failed_nodes(self, node_lists, timeout_s: float = 5.0) -> dict:
        return dict(self.failed)

    def previous_runs(self, timeout_s: float = 10.0) -> list[dict]:
        self.calls.append("previous_runs")
        return list(self.runs)

    def requeue(self, deadline: float):
        self.calls.append("requeue")
        return self.requeue_answer

    def cancel(self, deadline: float):
        self.calls.append("cancel")
        return True, ""

    def running_steps(self, component_ids):
        return list(self.steps)

    def cancel_steps(self, step_ids) -> bool:
        self.calls.append(("cancel_steps", list(step_ids)))
        return True


POLICIES = Policies(startup_timeout_s=60, health_grace_s=15, watchdog_timeout_s=30, checkpoint_timeout_s=30,
                    stop_grace_s=5, signal_before_end_s=120, max_requeues=2, server_port=None, server_host=None,
                    group_port=None, main_process_port=None, requeue_on_node_failure=False)


def make_plan(backend: str = "slurm", mode: str = "server", **policies) -> Plan:
    components = [Component("trainer", 1 if mode == "server" else None, 1, 0, {}, {}, ["train"], ["accelerate"])]
    if mode == "server":
        components.insert(0, Component("server", 0, 1, 0, {}, {}, ["serve"], ["trl", "vllm-serve"]))
    return Plan(name="t", backend=backend, mode=mode, device="cpu", walltime_s=600, python="python3",
                components=components, job_sbatch={}, setup=[], env={}, secret_env=[], grpo={}, preflight=False,
                policies=replace(POLICIES, **policies), model=ModelSpec("m"), data=DataSpec("d"),
                reward=RewardSpec(["r"]))


def no_stacks(world: "World", component: str) -> str:
    """What a hang's reason ends with when the fake steps cannot be signalled (tests/test_hangs.py signals them)."""
    return (f"; log tails in {world.dir / f'hang-{component}.txt'} (its processes could not be asked for their "
            f"Python stacks)")


class World:
    """One attempt with everything faked. By default the server publishes its address at 1 s and is
    healthy from 5 s; the trainer, started with the server, is prepared after 1 s (waiting_for_server),
    looks for server_ready.json every 0.5 s, then beats every 2 s (steps 1, 2, ...) and finishes 40 s
    after it saw the handover."""

    def __init__(self, tmp_path: Path, backend: str = "slurm", mode: str = "server", restarts: int = 0, **policies):
        self.clock = FakeClock()
        self.runner = FakeRunner(self.clock)
        self.slurm = FakeSlurm()
        self.job_dir = tmp_path / "job"
        self.job_dir.mkdir(exist_ok=True)
        self.plan = make_plan(backend, mode, **policies)
        self.health_at: Callable[[float], Health] = lambda t: Health.OK if t >= 5 else Health.REFUSED
        self.health_calls = 0
        self.supervisor = Supervisor(self.job_dir, backend, plan=self.plan, runner=self.runner, clock=self.clock,
                                     health=self.health, slurm=self.slurm, restarts=restarts, job_id="5",
                                     install_signals=False)
        self.dir = self.supervisor.dir
        self.runner.scripts["server"].append(self.server_ok)
        self.runner.scripts["trainer"].append(lambda step: self.trainer(step, finish_after=40))

    def health(self, url: str) -> Health:
        self.health_calls += 1
        assert url == URL
        return self.health_at(self.clock.now)

    # what the components do
    def server_ok(self, step: FakeStep, publish_after: float = 1.0) -> None:
        self.clock.at(self.clock.now + publish_after, lambda: write_server(
            self.dir, ServerAddress(host="node1", address="10.0.0.1", port=8000, pid=1, started_at="now")))

    def beat(self, phase: str, step: Optional[int] = None, **extra) -> None:
        write_json_atomic(self.dir / HEARTBEAT, {"phase": phase, "step": step, "time": self.clock.time(), "pid": 7,
                                                 "host": "node2", **extra})

    def trainer(self, step: FakeStep, finish_after: Optional[float] = None, stall_after: Optional[float] = None,
                rc: int = 0, done: bool = True, output: str = "", prepare_s: float = 1.0) -> None:
        """The overlapped start: prepared after prepare_s, then waits for the handover (server mode). From
        the handover (step.trained_from) it beats every 2 s; stops beating at stall_after; exits rc at
        finish_after."""
        def train() -> None:
            start = step.trained_from = self.clock.now
            end = min(x for x in (finish_after, stall_after, 1_000.0) if x is not None)
            self.clock.every(start, 2.0, start + end,
                             lambda n: step.rc is None and self.beat("step", n + 1, stage="end"))
            if finish_after is not None:
                def finish():
                    if done:
                        self.beat("done", None)
                    step.exit(rc, output)
                self.clock.at(start + finish_after, finish)

        if self.plan.mode != "server":
            return train()
        self.waits_for_handover(step, prepare_s, train)

    def waits_for_handover(self, step: FakeStep, prepare_s: float, then: Callable[[], None]) -> None:
        """Beats waiting_for_server after prepare_s, then looks for server_ready.json every 0.5 s."""
        def look(n: int) -> None:
            if step.rc is None and not hasattr(step, "handed") and (self.dir / SERVER_READY).exists():
                step.handed = True
                then()
        ready = self.clock.now + prepare_s
        self.clock.at(ready, lambda: step.rc is None and self.beat("waiting_for_server", None))
        self.clock.every(ready, 0.5, ready + 300, look)

    def signal_at(self, t: float, sig: signal.Signals) -> None:
        self.clock.at(t, lambda: self.supervisor.on_signal(sig))

    def job_info(self, **fields) -> JobInfo:
        info = dict(states=["RUNNING", "RUNNING"], restarts=0, component_ids=["5", "6"],
                    end_time=self.clock.time() + 120, preempt_time=None, nodes=["node1", "node2"],
                    start_time=self.clock.time() - 60, time_limit_s=600)
        info.update(fields)
        return JobInfo(**info)

    def run(self) -> Result:
        result = self.supervisor.run()
        assert read_result(self.dir) == result  # what result.json says is what run() returned
        return result

    @property
    def log(self) -> str:
        return (self.dir / "supervisor.log").read_text()


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


def stopped(step: FakeStep) -> bool:
    return step.terminated and step.killed


# ----------------------------------------------------------------------------- the whole path


def test_trainer_completes_then_the_server_is_stopped(world):
    result = world.run()
    assert (result.state, result.cause, result.reason) == (State.COMPLETED, Cause.FINISHED, "trainer finished")
    # both start at once; the trainer is prepared at 1 s and sees the handover at its next look after 5 s
    assert (result.timings["trainer_started"], result.timings["trainer_ready"]) == (0.0, 1.0)
    assert result.timings["server_healthy"] == 5.0 and result.timings["trainer_ended"] == 5.5 + 40
    assert set(result.timings) == {"server_healthy", "trainer_started", "trainer_ready", "first_step", "trainer_ended"}
    server, trainer = world.runner.starts("server")[0], world.runner.starts("trainer")[0]
    assert stopped(server) and not trainer.terminated and result.trainer_rc == 0
    assert "LAUNCHER_SERVER_URL" not in world.runner.envs[1]  # the address comes in server_ready.json
    ready = read_server_ready(world.dir)
    assert (ready.url, ready.host, ready.healthy_after_s) == (URL, "node1", 5.0)
    lines = ("trainer started: trainer", "server address published: http://10.0.0.1:8000 (host node1)",
             "trainer prepared, waiting for the server after 1.0 s",
             "server healthy after 5.0 s at http://10.0.0.1:8000; address handed to the trainer (server_ready.json)",
             "first training step done", "trainer ended first with exit code 0", "server stopped (trainer ended)",
             "job COMPLETED")
    positions = [world.log.find(line) for line in lines]
    assert -1 not in positions and positions == sorted(positions), world.log
    status = read_status(world.dir)
    assert status.phase is Phase.FINISHED and status.state is State.COMPLETED and status.server_url == URL
    assert not result.continues and not result.provisional


def test_colocate_mode_runs_the_trainer_alone(tmp_path):
    world = World(tmp_path, mode="colocate")
    result = world.run()
    assert result.state is State.COMPLETED and result.server_rc is None
    assert [s.name for s in world.runner.started] == ["trainer"] and world.health_calls == 0


# ----------------------------------------------------------------------------- server startup


def test_server_exits_before_healthy(world):
    world.runner.scripts["server"] = [lambda step: world.clock.at(3, lambda: step.exit(1, "ValueError: bad model"))]
    result = world.run()
    assert (result.state, result.cause) == (State.FAILED, Cause.SERVER_FAILED)
    log = world.dir / "server.log"
    # the root-cause line first, then where the full log is; the log's last lines follow
    assert result.reason == (f"server exited with code 1 before becoming healthy: ValueError: bad model (full log: {log})"
                             "\nlast lines of server.log:\nValueError: bad model")
    assert stopped(world.runner.starts("trainer")[0]) and not (world.dir / SERVER_READY).exists()
    assert "trainer stopped (server died)" in world.log
    assert "ValueError: bad model" in world.log  # the tail follows the last line of supervisor.log


def test_server_never_healthy_within_the_startup_timeout(tmp_path):
    world = World(tmp_path, startup_timeout_s=20)
    world.health_at = lambda t: Health.ERROR
    result = world.run()
    assert (result.state, result.cause) == (State.FAILED, Cause.SERVER_FAILED)
    assert result.reason.startswith("server not healthy after server.startup_timeout_s=20 s (full log: ")
    assert result.reason.splitlines()[1] == "last lines of server.log:"
    assert 20 < world.clock.now <= 22 and "trainer stopped (server not healthy in time)" in world.log
    assert stopped(world.runner.starts("trainer")[0]) and stopped(world.runner.starts("server")[0])


def test_srun_transient_error_restarts_the_step_within_the_retry_window(world):
    world.runner.scripts["server"] = [lambda step: world.clock.at(world.clock.now + 2, lambda: step.exit(1, CONTROLLER_AWAY)),
                                      world.server_ok]
    world.health_at = lambda t: Health.OK if t >= 12 else Health.REFUSED
    result = world.run()
    assert result.state is State.COMPLETED
    assert len(world.runner.starts("server")) == 2
    error = srun_transient_line(CONTROLLER_AWAY)
    assert f"server step could not be started ({error}); slurmctld is unreachable, trying again in 5 s" in world.log


def test_srun_transient_error_is_not_retried_after_the_window(world):
    """Every trainer start meets the outage: it is started again for CONTROLLER_RETRY_S after its first start."""
    world.runner.scripts["trainer"] = [lambda step: world.clock.at(world.clock.now + 1, lambda: step.exit(1, CONTROLLER_AWAY))]
    result = world.run()
    assert (result.state, result.cause) == (State.FAILED, Cause.TRAINER_FAILED)
    assert result.reason.startswith(f"trainer exited with code 1: {CONTROLLER_AWAY} (full log: ")
    assert "\nlast lines of trainer.log:\n" + CONTROLLER_AWAY in result.reason
    starts = world.runner.starts("trainer")
    # start k at 6k s (1 s to fail + 5 s pause); its failure at 6k+1 s is retried while within 300 s: k = 0..49
    assert len(starts) == 51
    first, last = world.supervisor.first_start["trainer"], world.clock.now
    assert monitors.CONTROLLER_RETRY_S < last - first <= monitors.CONTROLLER_RETRY_S + 7


def test_a_component_error_that_looks_transient_is_not_retried_on_the_local_backend(tmp_path):
    world = World(tmp_path, backend="local")
    world.runner.scripts["trainer"] = [lambda step: world.clock.at(world.clock.now + 1, lambda: step.exit(1, CONTROLLER_AWAY))]
    assert world.run().cause is Cause.TRAINER_FAILED and len(world.runner.starts("trainer")) == 1


# ----------------------------------------------------------------------------- the overlapped start


def test_a_trainer_ready_after_the_server_takes_the_address_at_once(world):
    world.runner.scripts["trainer"] = [lambda step: world.trainer(step, finish_after=40, prepare_s=8)]
    result = world.run()
    assert result.state is State.COMPLETED
    assert result.timings["server_healthy"] == 5.0 and (world.dir / SERVER_READY).exists()
    # max(server ready, trainer ready): its first look finds the address (its waiting beat was too brief to be seen)
    assert world.runner.starts("trainer")[0].trained_from == 8.0 and result.timings["first_step"] == 8.0
    assert result.timings["trainer_ended"] == 48.0


def test_a_trainer_failing_while_the_server_starts_ends_the_job_at_once(world):
    """A reward function that does not import, a missing column, a model that does not load, out of memory:
    the trainer exits while preparing; the job ends then, not when the server would have been healthy."""
    world.health_at = lambda t: Health.OK if t >= 50 else Health.REFUSED
    error = "launcher.train.errors.JobError: reward function 'my_rewards.nope': no importable module in that path"
    world.runner.scripts["trainer"] = [lambda step: world.clock.at(3, lambda: step.exit(2, error))]
    result = world.run()
    assert (result.state, result.cause, result.trainer_rc) == (State.FAILED, Cause.TRAINER_FAILED, 2)
    assert result.reason.startswith("trainer exited with code 2 while the server was starting: ")
    assert "my_rewards.nope" in result.reason.splitlines()[0]
    assert 3 <= world.clock.now < 4 and result.timings["trainer_ended"] == 3.0
    assert stopped(world.runner.starts("server")[0]) and "server stopped (trainer ended)" in world.log
    assert not (world.dir / SERVER_READY).exists()


def test_the_watchdog_does_not_count_the_wait_for_a_slow_server(tmp_path):
    world = World(tmp_path, watchdog_timeout_s=30, startup_timeout_s=120)
    world.health_at = lambda t: Health.OK if t >= 50 else Health.REFUSED  # the trainer waits 49 s > 30 s
    result = world.run()
    assert result.state is State.COMPLETED and result.timings["trainer_ended"] == 50.5 + 40


def test_the_startup_timeout_still_bounds_the_trainers_wait(tmp_path):
    world = World(tmp_path, watchdog_timeout_s=30, startup_timeout_s=45)
    world.health_at = lambda t: Health.ERROR
    result = world.run()
    assert (result.state, result.cause) == (State.FAILED, Cause.SERVER_FAILED)
    assert result.reason.startswith("server not healthy after server.startup_timeout_s=45 s")
    assert 45 < world.clock.now <= 46 and stopped(world.runner.starts("trainer")[0])


def test_a_trainer_that_never_takes_the_address_is_a_hang(world):
    world.runner.scripts["trainer"] = [lambda step: world.clock.at(1, lambda: world.beat("waiting_for_server"))]
    result = world.run()
    assert (result.state, result.cause) == (State.FAILED, Cause.HANG)
    assert result.reason.endswith("stalled in phase 'waiting_for_server'" + no_stacks(world, "trainer"))
    assert 35 < world.clock.now <= 35.5  # watchdog_timeout_s=30 from the handover at 5 s


def test_usr2_before_the_server_is_ready_asks_for_no_checkpoint(world):
    world.health_at = lambda t: Health.OK if t >= 100 else Health.REFUSED
    world.signal_at(10, signal.SIGUSR2)
    world.slurm.job = world.job_info()
    result = world.run()
    assert (result.state, result.cause) == (State.REQUEUED, Cause.WALLTIME)
    assert "the trainer has trained nothing yet (phase waiting_for_server): no checkpoint" in world.log
    assert not (world.dir / CHECKPOINT_REQUEST).exists() and world.clock.now < 10 + POLICIES.stop_grace_s + 1


def test_usr2_before_the_server_is_ready_still_checkpoints_a_trainer_that_trains(world):
    """trainer.use_vllm=false: it trains without the server, so what it trained is saved."""
    world.health_at = lambda t: Health.OK if t >= 100 else Health.REFUSED
    def trains_at_once(step: FakeStep) -> None:
        world.clock.every(0, 2.0, 300, lambda n: step.rc is None and world.beat("step", n + 1, stage="end"))
    world.runner.scripts["trainer"] = [saves_on_request(world, train=trains_at_once)]
    world.signal_at(10, signal.SIGUSR2)
    world.slurm.job = world.job_info()
    result = world.run()
    assert result.state is State.REQUEUED and "checkpoint at step 9 saved" in result.reason


# ----------------------------------------------------------------------------- server while training


def test_server_dies_during_training(world):
    world.runner.scripts["server"] = [lambda step: (world.server_ok(step),
                                                    world.clock.at(20, lambda: step.exit(137, "Killed")))]
    result = world.run()
    assert (result.state, result.cause, result.server_rc) == (State.FAILED, Cause.SERVER_FAILED, 137)
    assert result.reason.startswith("server exited with code 137 during training (full log: ")
    assert "server ended first with exit code 137" in world.log and "trainer stopped (server died)" in world.log
    assert stopped(world.runner.starts("trainer")[0]) and result.timings["server_ended"] == 20.0


def test_health_refused_twice_means_the_server_is_gone(world):
    # a single refusal between answers is not enough; two in a row are
    answers = {t: Health.REFUSED for t in (10, 14, 20, 21)}
    world.health_at = lambda t: answers.get(int(t), Health.OK) if t >= 5 else Health.REFUSED
    result = world.run()
    assert (result.state, result.cause) == (State.FAILED, Cause.SERVER_FAILED)
    assert result.reason.startswith(f"server process died (connection refused at {URL})")
    assert 21 <= world.clock.now < 22 and "server refuses connections: its process is gone" in world.log


def test_refusals_are_counted_in_a_row():
    watch = monitors.ServerHealth(URL, grace_s=60, started=0)
    seen = [Health.REFUSED, Health.OK, Health.REFUSED, Health.ERROR, Health.REFUSED, Health.REFUSED]
    verdicts = [watch.update(t, monitors.ServerSeen(None, answer)) for t, answer in enumerate(seen)]
    assert verdicts[:5] == [None] * 5
    assert verdicts[5].cause is Cause.SERVER_FAILED and verdicts[5].stop_why == "server died"


def test_health_silent_past_the_grace_is_a_hung_server(world):
    world.health_at = lambda t: Health.OK if 5 <= t < 12 else (Health.ERROR if t >= 12 else Health.REFUSED)
    result = world.run()
    assert (result.state, result.cause) == (State.FAILED, Cause.HANG)
    assert result.reason == ("server stopped answering /health for more than server.health_grace_s=15 s "
                             "(hung or frozen; it still accepts connections)" + no_stacks(world, "server"))
    last_ok = 11.0
    assert last_ok + 15 < world.clock.now <= last_ok + 15 + 1.5
    assert "server /health silent for 16 s (hung or frozen server)" in world.log


def test_a_server_that_does_not_stop_costs_one_grace(world):
    world.runner.scripts["server"] = [lambda step: (setattr(step, "ignores_term", True), world.server_ok(step))]
    world.health_at = lambda t: Health.OK if 5 <= t < 12 else (Health.ERROR if t >= 12 else Health.REFUSED)
    world.run()
    decided = world.clock.now
    assert world.runner.starts("server")[0].killed and "server stopped (server unresponsive), exit code -9" in world.log
    assert 5 <= decided - 27 <= 6.5  # SIGKILL after cluster.stop_grace_s=5


# ----------------------------------------------------------------------------- the trainer


def test_trainer_hang_names_the_phase_and_step(world):
    world.runner.scripts["trainer"] = [lambda step: world.trainer(step, stall_after=13)]  # beats at +0..+12: step 7
    result = world.run()
    assert (result.state, result.cause) == (State.FAILED, Cause.HANG)
    assert result.reason == ("trainer made no progress for more than trainer.watchdog_timeout_s=30 s; "
                             "stalled in phase 'step' at step 7" + no_stacks(world, "trainer"))
    last_beat = world.runner.starts("trainer")[0].trained_from + 12
    assert last_beat + 30 < world.clock.now <= last_beat + 30.5
    assert "trainer stopped (trainer hung)" in world.log and stopped(world.runner.starts("server")[0])


def test_trainer_hang_before_any_heartbeat(world):
    world.runner.scripts["trainer"] = [lambda step: None]
    result = world.run()
    assert result.cause is Cause.HANG and result.reason.endswith("stalled in phase 'start (no heartbeat yet)'"
                                                                 + no_stacks(world, "trainer"))


def test_trainer_fails(world):
    world.runner.scripts["trainer"] = [lambda step: world.trainer(step, finish_after=9, rc=3, done=False,
                                                                  output="RuntimeError: CUDA out of memory")]
    result = world.run()
    assert (result.state, result.cause, result.trainer_rc) == (State.FAILED, Cause.TRAINER_FAILED, 3)
    assert result.reason == (f"trainer exited with code 3: RuntimeError: CUDA out of memory (full log: "
                             f"{world.dir / 'trainer.log'})\nlast lines of trainer.log:\nRuntimeError: CUDA out of memory")
    assert "server stopped (trainer ended)" in world.log


def test_trainer_exit_0_without_done_fails(world):
    world.runner.scripts["trainer"] = [lambda step: world.trainer(step, finish_after=7, done=False)]
    result = world.run()
    assert (result.state, result.cause) == (State.FAILED, Cause.TRAINER_FAILED)
    assert result.reason.startswith("the trainer step ended with exit code 0 but the trainer never reported "
                                    "finishing (last heartbeat: phase 'step', step 4)")


def test_srun_node_failure_at_the_trainer_end_ends_the_job_naming_the_node(world):
    world.runner.scripts["trainer"] = [lambda step: world.trainer(
        step, finish_after=9, done=False, output="srun: error: Node failure on node2")]
    world.slurm.job = world.job_info(states=["PENDING", "PENDING"])  # Slurm requeued the job (--requeue)
    result = world.run()
    assert (result.state, result.cause) == (State.FAILED, Cause.NODE_FAILURE)
    assert result.reason == ("node failure: node2 (srun: Node failure); the job ends here "
                             "(cluster.requeue_on_node_failure=false)")
    assert "cancel" in world.slurm.calls  # the requeue Slurm made is cancelled
    assert "cancelled the requeue Slurm made" in world.log


# ----------------------------------------------------------------------------- USR2: checkpoint, requeue


def saves_on_request(world: World, step_no: int = 9, after: float = 3.0, train: Optional[Callable] = None):
    """A trainer that, once checkpoint.request appears, saves `after` s later and exits 0 (heartbeat done);
    `train(step)` is how it beats meanwhile (World.trainer: after the handover)."""
    def script(step: FakeStep) -> None:
        (train or world.trainer)(step)

        def look(n: int) -> None:
            if (world.dir / CHECKPOINT_REQUEST).exists() and step.rc is None and not hasattr(step, "saving"):
                step.saving = True

                def save():
                    write_json_atomic(world.dir / CHECKPOINT_DONE, {"step": step_no, "checkpoint": f"checkpoint-{step_no}"})
                    world.beat("done")
                    step.exit(0)
                world.clock.at(world.clock.now + after, save)
        world.clock.every(world.clock.now, 0.5, world.clock.now + 300, look)
    return script


def test_usr2_checkpoints_within_the_budget_then_requeues(world):
    world.runner.scripts["trainer"] = [saves_on_request(world)]
    world.signal_at(20, signal.SIGUSR2)
    world.slurm.job = world.job_info()  # EndTime in 120 s: the checkpoint budget is checkpoint_timeout_s=30
    result = world.run()
    assert (result.state, result.cause) == (State.REQUEUED, Cause.WALLTIME) and result.continues
    assert result.reason == "walltime: checkpoint at step 9 saved; requeued (restart 1 of at most 2)"
    assert "requeue" in world.slurm.calls
    assert "walltime signal (USR2): asked the trainer for a checkpoint (waiting up to 30 s" in world.log
    assert "checkpoint saved at step 9: checkpoint-9" in world.log
    assert 23 <= world.clock.now <= 25  # saved 3 s after the request; nothing waited for the whole budget


def test_usr2_without_a_checkpoint_in_time_still_requeues(world):
    world.signal_at(20, signal.SIGUSR2)
    world.slurm.job = world.job_info(end_time=world.clock.time() + 40)  # 20 s left at USR2
    world.runner.scripts["trainer"] = [lambda step: world.trainer(step)]  # never saves
    result = world.run()
    assert result.state is State.REQUEUED and "no checkpoint saved" in result.reason
    # waited min(checkpoint_timeout_s=30, 60% of 20 s, 20 - 5 s) = 12 s, then stopped within 20% of 20 s
    assert "waiting up to 12 s" in world.log and "no checkpoint within the time limit" in world.log


def test_usr2_budget_follows_what_is_left_of_the_run():
    preempted = JobInfo(states=["RUNNING"], restarts=0, end_time=1010.0, preempt_time=1000.0)
    budget = endings.usr2_budget(1000.0, preempted, POLICIES)  # GraceTime 10 s
    assert budget.cause is Cause.PREEMPTION and (budget.checkpoint_s, budget.stop_grace_s) == (5.0, 2.0)
    walltime = endings.usr2_budget(1000.0, JobInfo(states=["RUNNING"], restarts=0, end_time=1120.0), POLICIES)
    assert walltime.cause is Cause.WALLTIME and (walltime.checkpoint_s, walltime.stop_grace_s) == (30.0, 5.0)
    unknown = endings.usr2_budget(1000.0, None, POLICIES)  # scontrol did not answer: signal_before_end_s is left
    assert unknown.left_s == 120 and unknown.checkpoint_s == 30


def test_usr2_at_max_requeues_fails_keeping_the_checkpoint(tmp_path):
    world = World(tmp_path, restarts=2)
    world.runner.scripts["trainer"] = [saves_on_request(world)]
    world.signal_at(20, signal.SIGUSR2)
    world.slurm.job = world.job_info(restarts=2)
    write_result(world.job_dir / "attempt-2", Result(State.REQUEUED, "walltime: ...", Cause.WALLTIME, attempt=2))
    result = world.run()
    assert (result.state, result.cause) == (State.FAILED, Cause.MAX_REQUEUES)
    assert result.reason == ("walltime: checkpoint at step 9 saved, but not requeued: cluster.max_requeues=2 "
                             "reached after 2 requeue(s)")
    assert "requeue" not in world.slurm.calls and not result.continues


def test_usr2_preemption_requeue_that_fails_is_a_failure(world):
    world.runner.scripts["trainer"] = [saves_on_request(world, after=1)]
    world.signal_at(20, signal.SIGUSR2)
    world.slurm.job = world.job_info(preempt_time=world.clock.time() + 20, end_time=world.clock.time() + 30)
    world.slurm.requeue_answer = (False, "scontrol requeue failed: Job is not requeueable")
    result = world.run()
    assert (result.state, result.cause) == (State.FAILED, Cause.PREEMPTION)
    assert result.reason == "preemption: checkpoint at step 9 saved; scontrol requeue failed: Job is not requeueable"


def test_usr2_as_the_trainer_finished_is_not_a_requeue(world):
    world.runner.scripts["trainer"] = [lambda step: world.trainer(step, finish_after=9.5)]  # from 5.5: exits at 15
    world.clock.at(15.2, lambda: world.supervisor.on_signal(signal.SIGUSR2))  # same tick as the exit at 15
    result = world.run()
    assert result.state is State.COMPLETED and "requeue" not in world.slurm.calls


def test_sigterm_during_the_checkpoint_wait_is_handled_as_slurms_end(world):
    world.runner.scripts["trainer"] = [lambda step: world.trainer(step)]  # never saves
    world.signal_at(20, signal.SIGUSR2)
    world.signal_at(24, signal.SIGTERM)
    world.slurm.job = world.job_info(states=["PENDING", "PENDING"], restarts=0)
    result = world.run()
    assert (result.state, result.cause) == (State.REQUEUED, Cause.REQUEUE)
    assert 24 <= world.clock.now < 26 and "requeue" not in world.slurm.calls


# ----------------------------------------------------------------------------- SIGTERM: why Slurm ends the run


def sigterm(world: World, **job) -> Result:
    world.signal_at(20, signal.SIGTERM)
    world.slurm.job = world.job_info(**job) if job is not None else None
    seen = []
    world.slurm.on_info = lambda: seen.append(read_result(world.dir))
    result = world.run()
    assert seen and seen[0].provisional and seen[0].state is State.STOPPED  # recorded before asking Slurm
    assert stopped(world.runner.starts("trainer")[0]) and stopped(world.runner.starts("server")[0])
    assert 20 <= world.clock.now <= 20 + 2 * endings.KILLWAIT_STOP_S
    return result


def test_sigterm_requeued_by_slurm(world):
    result = sigterm(world, states=["PENDING", "PENDING"])
    assert (result.state, result.cause) == (State.REQUEUED, Cause.REQUEUE) and result.continues
    assert result.reason.startswith("requeued by Slurm (scontrol requeue or preemption)")
    assert not result.provisional


def test_sigterm_preemption_that_cancels(world):
    result = sigterm(world, states=["COMPLETING", "COMPLETING"], preempt_time=world.clock.time() + 10)
    assert (result.state, result.cause) == (State.FAILED, Cause.PREEMPTION)


def test_sigterm_at_walltime(world):
    result = sigterm(world, states=["TIMEOUT", "TIMEOUT"], start_time=world.clock.time() - 580,
                     end_time=world.clock.time() + 20)
    assert (result.state, result.cause) == (State.FAILED, Cause.WALLTIME)


def test_sigterm_node_failure_ends_the_job_and_cancels_the_requeue(world):
    world.slurm.failed = {"node2": ("DOWN", "launcher fault test")}
    result = sigterm(world, states=["PENDING", "PENDING"])
    assert (result.state, result.cause) == (State.FAILED, Cause.NODE_FAILURE) and not result.continues
    assert result.reason == ("node failure: node2 (DOWN: launcher fault test); the job ends here "
                             "(cluster.requeue_on_node_failure=false)")
    assert world.slurm.calls.count("cancel") == 1


def test_sigterm_node_failure_requeues_when_configured(tmp_path):
    world = World(tmp_path, requeue_on_node_failure=True)
    world.slurm.failed = {"node2": ("DOWN", "")}
    result = sigterm(world, states=["PENDING", "PENDING"])
    assert (result.state, result.cause) == (State.REQUEUED, Cause.NODE_FAILURE) and result.continues
    assert "cancel" not in world.slurm.calls


def test_sigterm_node_failure_seen_only_in_accounting(world):
    world.slurm.runs = [{"JobID": "5+0", "State": "NODE_FAIL", "NodeList": "node1", "Start": "x", "End": "y"}]
    result = sigterm(world, states=["PENDING", "PENDING"])
    assert result.cause is Cause.NODE_FAILURE and "one of node1,node2 (NODE_FAIL in accounting)" in result.reason


def test_sigterm_cancel(world):
    result = sigterm(world, states=["CANCELLED", "CANCELLED"])
    assert (result.state, result.cause) == (State.STOPPED, Cause.CANCEL)
    assert result.reason == "stopped by SIGTERM (job state CANCELLED: cancelled)"


def test_sigterm_when_scontrol_does_not_answer_is_a_cancel(world):
    world.signal_at(20, signal.SIGTERM)
    result = world.run()
    assert result.state is State.STOPPED and "unknown (scontrol did not answer)" in result.reason


def test_local_backend_signals_stop_both(tmp_path):
    world = World(tmp_path, backend="local")
    world.signal_at(20, signal.SIGINT)
    result = world.run()
    assert (result.state, result.cause, result.reason) == (State.STOPPED, Cause.CANCEL, "stopped by SIGINT")
    assert "trainer stopped (SIGINT received)" in world.log and world.slurm.calls == []


def test_a_signal_during_startup_stops_the_server(tmp_path):
    world = World(tmp_path, backend="local")
    world.health_at = lambda t: Health.ERROR
    world.signal_at(3, signal.SIGTERM)
    assert world.run().reason == "stopped by SIGTERM" and stopped(world.runner.starts("server")[0])
    assert stopped(world.runner.starts("trainer")[0])


# ----------------------------------------------------------------------------- a requeued attempt


def test_restart_after_a_lost_batch_node_fails_at_once(tmp_path):
    world = World(tmp_path, restarts=1)
    write_result(world.job_dir / "attempt-1", Result(State.STOPPED, endings.PROVISIONAL_REASON, Cause.CANCEL,
                                                     provisional=True))
    world.slurm.runs = [{"JobID": "5+0", "State": "NODE_FAIL", "NodeList": "node1", "Start": "a", "End": "b"},
                        {"JobID": "5+0", "State": "RUNNING", "NodeList": "node2", "Start": "c", "End": "Unknown"}]
    result = world.run()
    assert (result.state, result.cause) == (State.FAILED, Cause.NODE_FAILURE)
    assert result.reason.startswith("attempt 1 ended NODE_FAIL on node1 by Slurm's accounting")
    assert world.runner.started == [] and result.attempt == 2


def test_restart_reads_the_previous_result_and_cancels_stale_steps(tmp_path):
    world = World(tmp_path, restarts=1)
    write_result(world.job_dir / "attempt-1", Result(State.REQUEUED, "requeued by Slurm (preempted)\nmore",
                                                     Cause.REQUEUE))
    world.slurm.job = world.job_info()
    world.slurm.steps = ["6.0"]
    world.slurm.cancel_steps = lambda ids: world.clock.at(world.clock.now + 3, lambda: world.slurm.steps.clear())
    result = world.run()
    assert result.state is State.COMPLETED and "previous_runs" not in world.slurm.calls
    assert "restart 1 of job 5: attempt 1 ended REQUEUED: requeued by Slurm (preempted)" in world.log
    assert "cancelling steps left from the previous run: 6.0" in world.log and "stale steps gone" in world.log


def test_restart_past_max_requeues_fails(tmp_path):
    world = World(tmp_path, restarts=3)
    result = world.run()
    assert (result.state, result.cause) == (State.FAILED, Cause.MAX_REQUEUES)
    assert result.reason.startswith("Slurm started this job a 4th time, but cluster.max_requeues=2; "
                                    "attempt 3 left no result and accounting has no earlier run")


# ----------------------------------------------------------------------------- the supervisor's own errors


def test_an_unexpected_exception_ends_the_attempt_failed_and_stops_the_components(world):
    def broken(url: str) -> Health:
        if world.clock.now > 12:
            raise KeyError("boom")
        return Health.OK if world.clock.now >= 5 else Health.REFUSED
    world.supervisor.health = broken
    result = world.run()
    assert (result.state, result.cause) == (State.FAILED, Cause.SUPERVISOR_ERROR)
    assert result.reason == "supervisor error: KeyError: 'boom'"
    assert stopped(world.runner.starts("server")[0]) and stopped(world.runner.starts("trainer")[0])
    assert "Traceback (most recent call last)" in world.log and "job FAILED: supervisor error" in world.log


def test_an_unreadable_plan_still_leaves_a_failed_result(tmp_path):
    (tmp_path / "plan.json").write_text("{not json")
    supervisor = Supervisor(tmp_path, "local", clock=FakeClock(), install_signals=False)
    result = supervisor.run()
    assert (result.state, result.cause) == (State.FAILED, Cause.SUPERVISOR_ERROR)
    assert result.reason.startswith("supervisor error: JSONDecodeError") and read_result(supervisor.dir) == result


# ----------------------------------------------------------------------------- the monitors alone


def test_startup_monitor_decisions():
    retry = monitors.TransientRetry()
    watch = monitors.ServerStartup(timeout_s=10, started=0, retry=retry)
    assert watch.update(1, monitors.StartupSeen(None)) is None
    assert watch.update(2, monitors.StartupSeen(None, url=URL, health=Health.ERROR)) is None
    assert watch.update(3, monitors.StartupSeen(None, url=URL, health=Health.OK)) == Healthy(URL)
    assert watch.update(4, monitors.StartupSeen(1, srun_error=CONTROLLER_AWAY)) == Restart("server", CONTROLLER_AWAY, 5.0)
    assert isinstance(watch.update(4, monitors.StartupSeen(1)), End)
    assert watch.update(10.5, monitors.StartupSeen(None, url=URL, health=Health.REFUSED)).cause is Cause.SERVER_FAILED


def test_watchdog_lets_the_trainer_wait_for_the_handover_and_no_longer():
    dog = monitors.TrainerWatchdog(timeout_s=30, started=0, awaiting_server=True)
    waiting = Heartbeat(phase="waiting_for_server", step=None, time=1.0)
    ready = dog.update(1, waiting)
    assert ready.mark == "trainer_ready" and dog.update(100, waiting) is None  # the startup timeout bounds this
    dog.handed_over(100)
    assert dog.update(130, waiting) is None
    assert "stalled in phase 'waiting_for_server'" in dog.update(130.5, waiting).reason
    no_server = monitors.TrainerWatchdog(timeout_s=30, started=0)  # colocate: nothing to wait for
    assert no_server.update(1, waiting).mark == "trainer_ready" and no_server.update(31.5, waiting).cause is Cause.HANG


def test_trainer_end_says_when_it_failed_while_the_server_started():
    end = monitors.TrainerEnd(started=0).update(3, monitors.TrainerExit(1, server_starting=True))
    assert end.reason == "trainer exited with code 1 while the server was starting" and end.tail == "trainer"
    assert monitors.TrainerEnd(started=0).update(3, monitors.TrainerExit(1)).reason == "trainer exited with code 1"


def test_watchdog_counts_any_new_heartbeat_as_progress():
    dog = monitors.TrainerWatchdog(timeout_s=30, started=0)
    beat = Heartbeat(phase="weight_sync", step=12, time=1.0)
    assert dog.update(1, beat) is None
    assert dog.update(31, beat) is None  # 30 s since it was first seen: not more than the timeout yet
    verdict = dog.update(31.5, beat)
    assert verdict.cause is Cause.HANG and "stalled in phase 'weight_sync' at step 12" in verdict.reason
    dog.reset(40)  # the trainer was started again: the old heartbeat is not its progress
    assert dog.update(69, beat) is None and dog.update(70.5, beat).cause is Cause.HANG
