"""Hangs diagnosed, fast: the stacks a real process writes on SIGURG (launcher/faulthandlers.py), the
supervisor's capture of them (launcher/supervisor/hangs.py) with real processes and in-process with fake
steps (both backends), the watchdog's and the trainer end's reasons naming a stalled reward, and the
reward guard (launcher/train/scoring.py) ending a process whose reward runs past reward.timeout_s.
The whole job with a hanging reward is in tests/test_local_backend_hangs.py and tests/integration/test_hangs.py."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.health import Health
from launcher.jobfolder.names import HEARTBEAT, STACKS_DIR
from launcher.jobfolder.progress import Heartbeat, TrainerPhase
from launcher.jobfolder.records import Cause, State
from launcher.supervisor import hangs, monitors
from launcher.supervisor.clock import RealClock
from launcher.supervisor.verdicts import End
from launcher.supervisor.steps import ProcessStep
from launcher.train.errors import EXIT_REWARD_STALLED
from launcher.train.report import HeartbeatWriter
from launcher.train.scoring import callable_name, guard
from test_supervisor import FakeStep, World, no_stacks

PYTHON = sys.executable

# a process stuck in a C call (a read on a pipe nobody writes), as a hung reward or collective is
STUCK = """
import os, sys, threading
from launcher import faulthandlers
path = faulthandlers.install(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] != "-" else None)
r, w = os.pipe()
def stuck_in_a_reward():
    os.read(r, 1)
print("ready", path, flush=True)
stuck_in_a_reward()
"""


def start_stuck(tmp_path: Path, component: str = "trainer", attempt: bool = True, log: str = "trainer.log"):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    env.pop("LAUNCHER_ATTEMPT_DIR", None)
    if attempt:
        env["LAUNCHER_ATTEMPT_DIR"] = str(tmp_path)
    step = ProcessStep(component, [PYTHON, "-c", STUCK, component], env, tmp_path / log)
    deadline = time.monotonic() + 30
    while "ready" not in step.output() and step.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the process says when its handler is registered: no guessing how long that takes
    assert "ready" in step.output(), step.output()
    return step


# ----------------------------------------------------------------------------- faulthandler in a real process


def test_sigurg_makes_a_process_stuck_in_a_c_call_write_its_stacks(tmp_path):
    step = start_stuck(tmp_path)
    try:
        files = list((tmp_path / STACKS_DIR).glob("trainer-*.txt"))
        assert [f.name for f in files] == [f"trainer-{os.uname().nodename}-{step.pid}.txt"]
        assert files[0].stat().st_size == 0  # nothing before it is asked
        step.signal(signal.SIGURG)
        deadline = time.monotonic() + 10
        while "stuck_in_a_reward" not in files[0].read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        text = files[0].read_text()
        assert "stuck_in_a_reward" in text and "most recent call first" in text, text
        assert step.poll() is None  # it answered and runs on: the signal asks, it does not end
    finally:
        step.stop(1)


def test_sigurg_is_harmless_to_a_process_without_the_handler(tmp_path):
    """The counter-test of the signal choice: SIGURG reaches every process of a step (srun, bash, accelerate's
    launcher); one without the handler ignores it. Outside a launcher job nothing is installed."""
    step = start_stuck(tmp_path, attempt=False)
    try:
        assert "ready None" in step.output()
        step.signal(signal.SIGURG)
        time.sleep(0.5)  # a process killed by the signal would be gone by now
        assert step.poll() is None and not (tmp_path / STACKS_DIR).exists()
        step.signal(signal.SIGUSR1)  # a signal whose default is to terminate: the check can fail
        assert step.proc.wait(timeout=10) == -signal.SIGUSR1
    finally:
        step.stop(1)


def test_a_forked_child_writes_its_own_stacks_file(tmp_path, monkeypatch):
    code = """
import os, sys, time
from launcher import faulthandlers
parent = faulthandlers.install("server")
pid = os.fork()
if pid == 0:
    child = faulthandlers.dump("asked")
    print(child, flush=True)
    os._exit(0)
os.waitpid(pid, 0)
print(parent, flush=True)
"""
    env = dict(os.environ, LAUNCHER_ATTEMPT_DIR=str(tmp_path))
    out = subprocess.run([PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    child, parent = out.stdout.split()
    assert child != parent and Path(child).name.startswith("server-") and "asked" in Path(child).read_text()
    assert Path(parent).read_text() == ""  # the child did not write into its parent's file


def test_the_component_comes_from_the_step_wrapper(tmp_path):
    code = "from launcher import faulthandlers; print(faulthandlers.install())"
    env = dict(os.environ, LAUNCHER_ATTEMPT_DIR=str(tmp_path), LAUNCHER_COMPONENT="trainer")
    out = subprocess.run([PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert Path(out.stdout.strip()).name.startswith("trainer-")
    env.pop("LAUNCHER_COMPONENT")  # vLLM's processes, through the plugin, when nothing says otherwise
    out = subprocess.run([PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert Path(out.stdout.strip()).name.startswith("server-")


# ----------------------------------------------------------------------------- the capture, real processes

# a component's process that starts a child which titles itself as vLLM's engine core does (setproctitle
# overwrites the memory /proc/<pid>/environ reads), then both wait, stuck
TITLED = """
import os, sys, time
from launcher import faulthandlers
faulthandlers.install()
r, w = os.pipe()
if os.fork() == 0:
    import setproctitle
    setproctitle.setproctitle("VLLM::EngineCore")
    faulthandlers.install()
    print("child", os.getpid(), flush=True)
    os.read(r, 1)
print("parent", os.getpid(), flush=True)
os.read(r, 1)
"""


def test_the_helper_signals_processes_whose_environ_a_process_title_wiped(tmp_path):
    """What the helper step does on a component's node (launcher.faulthandlers.signal_component): the
    titled child's environ no longer names the component (so matching by environment alone misses it,
    as it missed the engine core on the cluster), yet it is signalled through its parent and dumps."""
    from launcher.faulthandlers import signal_component

    env = dict(os.environ, LAUNCHER_ATTEMPT_DIR=str(tmp_path), LAUNCHER_COMPONENT="server",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([PYTHON, "-c", TITLED], env=env, stdout=subprocess.PIPE, text=True)
    said: dict[str, str] = {}
    try:
        said.update(proc.stdout.readline().split() for _ in range(2))
        parent, child = int(said["parent"]), int(said["child"])
        assert f"LAUNCHER_ATTEMPT_DIR={tmp_path}".encode() in Path(f"/proc/{parent}/environ").read_bytes()
        assert f"LAUNCHER_ATTEMPT_DIR={tmp_path}".encode() not in Path(f"/proc/{child}/environ").read_bytes()
        assert signal_component(str(tmp_path), "trainer") == []  # another component's: nobody
        assert signal_component(str(tmp_path), "server") == sorted([parent, child])
        host = os.uname().nodename
        files = [tmp_path / STACKS_DIR / f"server-{host}-{pid}.txt" for pid in (parent, child)]
        deadline = time.monotonic() + 10
        while not all(f.stat().st_size for f in files) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all("most recent call first" in f.read_text() for f in files), [f.read_text() for f in files]
    finally:
        for pid in [int(said[k]) for k in ("child",) if k in said]:
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()



def test_capture_of_a_hung_local_step_holds_the_stuck_frame(tmp_path):
    step = start_stuck(tmp_path)
    (tmp_path / "server.log").write_text("server line\n")
    try:
        t0 = time.monotonic()
        found = hangs.capture(tmp_path, "trainer", "local", step, None, "t-trainer", RealClock(), "stalled")
        took = time.monotonic() - t0
    finally:
        step.stop(1)
    report = found.path.read_text()
    assert found.path == tmp_path / "hang-trainer.txt" and found.answered == [f"trainer-{os.uname().nodename}-{step.pid}.txt"]
    assert "stuck_in_a_reward" in report and "hang of the trainer: stalled" in report
    assert "last 40 lines of trainer.log" in report and "server line" in report  # both logs' tails
    assert found.summary().startswith("Python stacks of 1 process(es) and log tails in ")
    assert took < 3, took  # every file answered: no waiting for the quiet period, far from CAPTURE_S
    print(f"\nMEASURED capture of one local process {took:.2f} s")


def test_a_frozen_process_cannot_answer_and_the_capture_is_bounded(tmp_path):
    """SIGSTOP: the kernel holds the signal until SIGCONT; the capture waits CAPTURE_S, then says so."""
    step = start_stuck(tmp_path)
    os.kill(step.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        found = hangs.capture(tmp_path, "trainer", "local", step, None, "t-trainer", RealClock(), "stalled")
        took = time.monotonic() - t0
    finally:
        os.kill(step.pid, signal.SIGCONT)
        step.stop(1)
    assert found.answered == [] and found.asked and "no process answered" in found.summary()
    assert hangs.CAPTURE_S <= took < hangs.CAPTURE_S + 2


def test_nvidia_smi_output_is_captured_where_the_command_exists(tmp_path, monkeypatch):
    from conftest import fake_executable

    fake_executable(tmp_path / "bin", "nvidia-smi", "echo 'GPU 0: H100 | 100% util | 79000MiB'")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    found = hangs.capture(tmp_path, "server", "local", None, None, "t-server", RealClock(), "silent")
    assert found.nvidia_smi and "GPU 0: H100 | 100% util" in found.path.read_text()
    fake_executable(tmp_path / "bin", "nvidia-smi", "sleep 60")  # a driver that hangs does not hang the supervisor
    t0 = time.monotonic()
    assert "did not answer within 0.5 s" in hangs.nvidia_smi(0.5) and time.monotonic() - t0 < 3
    monkeypatch.setenv("PATH", "/nonexistent")
    assert hangs.nvidia_smi() is None


def test_empty_stacks_files_are_removed_and_answers_kept(tmp_path):
    stacks = tmp_path / STACKS_DIR
    stacks.mkdir()
    (stacks / "server-h-1.txt").write_text("")
    hangs.remove_empty_stacks(tmp_path)
    assert not stacks.exists()
    stacks.mkdir()
    (stacks / "server-h-1.txt").write_text("")
    (stacks / "trainer-h-2.txt").write_text("Thread 0x1 (most recent call first):\n")
    hangs.remove_empty_stacks(tmp_path)
    assert [p.name for p in stacks.iterdir()] == ["trainer-h-2.txt"]


# ----------------------------------------------------------------------------- the supervisor, in-process


class AnsweringStep(FakeStep):
    """A fake step whose processes answer SIGURG by appending a dump to their stacks file."""

    def __init__(self, name, log, attempt_dir: Path, frame: str):
        super().__init__(name, log)
        self.attempt_dir, self.frame, self.signals = attempt_dir, frame, []

    def signal(self, sig) -> None:
        self.signals.append(sig)
        path = self.attempt_dir / STACKS_DIR / f"{self.name}-node2-{self.pid}.txt"
        path.parent.mkdir(exist_ok=True)
        with open(path, "a") as f:
            f.write(f'Current thread 0x1 (most recent call first):\n  File "r.py", line 3 in {self.frame}\n')


def answering(world: World, name: str, frame: str) -> None:
    """Start `name` as an AnsweringStep, running the script the world gives it."""
    runner, original = world.runner, world.runner.start

    def start(component, env, log):
        if component.name != name:
            return original(component, env, log)
        step = AnsweringStep(name, Path(log), world.dir, frame)
        (world.dir / STACKS_DIR).mkdir(exist_ok=True)
        (world.dir / STACKS_DIR / f"{name}-node2-999.txt").write_text("")  # a process that never answers
        runner.started.append(step)
        runner.envs.append(env)
        scripts = runner.scripts[name]
        (scripts.pop(0) if len(scripts) > 1 else scripts[0])(step)
        return step

    runner.start = start


class SignallingSlurm:
    """FakeSlurm's answers plus signal_step: scancel --signal of the step, which the fake step answers."""

    def __init__(self, base, world: World):
        self.base, self.world, self.signalled = base, world, []

    def __getattr__(self, name):
        return getattr(self.base, name)

    def signal_step(self, name: str, signal_name: str) -> list[str]:
        self.signalled.append((name, signal_name))
        self.world.supervisor.trainer.signal(signal.SIGURG)
        return ["6.0"]


def test_local_trainer_hang_captures_stacks_before_stopping_and_the_reason_names_the_file(tmp_path):
    world = World(tmp_path, backend="local", watchdog_timeout_s=30)
    answering(world, "trainer", "stuck_reward")
    world.runner.scripts["trainer"] = [lambda step: world.trainer(step, stall_after=13)]
    result = world.run()
    trainer = world.runner.starts("trainer")[0]
    assert trainer.signals == [signal.SIGURG] and stopped(trainer)
    assert (result.state, result.cause) == (State.FAILED, Cause.HANG)
    report = world.dir / "hang-trainer.txt"
    assert result.reason == ("trainer made no progress for more than trainer.watchdog_timeout_s=30 s; stalled in "
                             f"phase 'step' at step 7; Python stacks of 1 process(es) and log tails in {report}")
    assert "in stuck_reward" in report.read_text() and "answered: 1 of 2 stack file(s)" in report.read_text()
    assert "trainer hung: Python stacks of 1 process(es)" in world.log
    assert list((world.dir / STACKS_DIR).iterdir()) == [world.dir / STACKS_DIR / f"trainer-node2-{trainer.pid}.txt"]


def test_slurm_trainer_hang_signals_the_step_by_name(tmp_path):
    world = World(tmp_path, watchdog_timeout_s=30)
    answering(world, "trainer", "stuck_reward")
    world.supervisor.slurm = slurm = SignallingSlurm(world.slurm, world)
    world.runner.scripts["trainer"] = [lambda step: world.trainer(step, stall_after=13)]
    result = world.run()
    assert slurm.signalled == [("t-trainer", "URG")] and result.cause is Cause.HANG
    assert result.reason.endswith(f"Python stacks of 1 process(es) and log tails in {world.dir / 'hang-trainer.txt'}")
    assert "asked with: scancel --signal=URG 6.0" in world.log


def test_a_hung_server_is_diagnosed_too(tmp_path):
    world = World(tmp_path, backend="local")
    answering(world, "server", "engine_core_busy_loop")
    world.health_at = lambda t: Health.OK if 5 <= t < 12 else (Health.ERROR if t >= 12 else Health.REFUSED)
    result = world.run()
    assert result.cause is Cause.HANG and world.runner.starts("server")[0].signals == [signal.SIGURG]
    assert "engine_core_busy_loop" in (world.dir / "hang-server.txt").read_text()
    assert f"Python stacks of 1 process(es) and log tails in {world.dir / 'hang-server.txt'}" in result.reason


def test_a_healthy_run_captures_nothing_and_leaves_no_stacks(tmp_path):
    """The counter-test: the same world, not hung: no signal, no report, the empty stack files removed."""
    world = World(tmp_path, backend="local")
    answering(world, "trainer", "stuck_reward")
    result = world.run()
    assert (result.state, result.reason) == (State.COMPLETED, "trainer finished")
    assert world.runner.starts("trainer")[0].signals == []
    assert not (world.dir / "hang-trainer.txt").exists() and not (world.dir / STACKS_DIR).exists()


def test_a_trainer_failure_is_not_diagnosed_as_a_hang(tmp_path):
    world = World(tmp_path, backend="local")
    answering(world, "trainer", "stuck_reward")
    world.runner.scripts["trainer"] = [lambda step: world.trainer(step, finish_after=3, rc=1, done=False)]
    result = world.run()
    assert result.cause is Cause.TRAINER_FAILED and "hang-" not in result.reason
    assert world.runner.starts("trainer")[0].signals == [] and not list(world.dir.glob("hang-*.txt"))


def test_fake_steps_without_signal_still_end_the_hang_promptly(tmp_path):
    world = World(tmp_path, watchdog_timeout_s=30)
    world.runner.scripts["trainer"] = [lambda step: world.trainer(step, stall_after=13)]
    result = world.run()
    assert result.reason.endswith(no_stacks(world, "trainer"))
    last_beat = world.runner.starts("trainer")[0].trained_from + 12
    assert world.clock.now <= last_beat + 30.5  # nothing signalled: nothing waited for


def stopped(step) -> bool:
    return step.terminated and step.killed


# ----------------------------------------------------------------------------- the reward in the reasons


def beat(phase="step", step=3, **extra) -> Heartbeat:
    return Heartbeat(phase, step, time.time(), 7, "node2", extra)


def test_the_watchdog_names_the_reward_being_computed():
    dog, last = monitors.TrainerWatchdog(30, 0), beat(stage="reward", reward="math_verify_reward")
    assert not isinstance(dog.update(1, last), End)
    verdict = dog.update(32, last)  # the same heartbeat: no progress since
    assert verdict.cause is Cause.HANG and verdict.diagnose == "trainer"
    assert verdict.reason.endswith("stalled in reward function 'math_verify_reward' at step 3 (phase 'step')")
    # counter-test: the reward returned (stage scored), the hang is elsewhere in the step
    dog, last = monitors.TrainerWatchdog(30, 0), beat(stage="scored", reward="math_verify_reward")
    dog.update(1, last)
    assert dog.update(32, last).reason.endswith(
        "stalled in phase 'step' at step 3")


def test_a_trainer_ended_by_its_reward_timeout_is_a_hang_in_that_reward():
    end = monitors.TrainerEnd(0).update(10, monitors.TrainerExit(EXIT_REWARD_STALLED, heartbeat=beat(
        "failed", 2, stalled_reward="slow_reward", reward_timeout_s=5.0, stuck_at="r.py:3 in slow_reward",
        stacks="/a/stacks/trainer-n-1.txt")))
    assert (end.cause, end.tail) == (Cause.HANG, "trainer")
    assert end.reason == ("reward function 'slow_reward' stalled: no result within reward.timeout_s=5 s at step 2, "
                          "stuck at r.py:3 in slow_reward; Python stacks in /a/stacks/trainer-n-1.txt")
    other = monitors.TrainerEnd(0).update(10, monitors.TrainerExit(1, heartbeat=beat("failed", 2, error="KeyError")))
    assert other.cause is Cause.TRAINER_FAILED  # a reward that raised is a failure, not a stall


# ----------------------------------------------------------------------------- the reward guard


def rewards_module(tmp_path: Path) -> None:
    (tmp_path / "guarded_rewards.py").write_text('''
import os, time
def quick(completions, **kwargs):
    return [1.0 for _ in completions]
def never_returns(completions, **kwargs):
    r, w = os.pipe()
    os.read(r, 1)
''')


GUARDED = """
import sys, json
from pathlib import Path
from launcher import faulthandlers
from launcher.train.report import HeartbeatWriter
from launcher.train.scoring import guard
import guarded_rewards
faulthandlers.install("trainer")
beat = HeartbeatWriter(Path(sys.argv[1]), enabled=True)
func = guard(getattr(guarded_rewards, sys.argv[2]), float(sys.argv[3]), beat)
values = func(completions=["a", "b"])
beat.flush()
print(json.dumps(values), flush=True)
"""


def run_guarded(tmp_path: Path, name: str, timeout_s: float) -> subprocess.CompletedProcess:
    rewards_module(tmp_path)
    env = dict(os.environ, LAUNCHER_ATTEMPT_DIR=str(tmp_path),
               PYTHONPATH=f"{tmp_path}:{Path(__file__).resolve().parents[1]}")
    return subprocess.run([PYTHON, "-c", GUARDED, str(tmp_path), name, str(timeout_s)], env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_reward_past_its_timeout_ends_the_process_naming_it_with_its_stacks(tmp_path):
    t0 = time.monotonic()
    out = run_guarded(tmp_path, "never_returns", 1.0)
    took = time.monotonic() - t0
    assert out.returncode == EXIT_REWARD_STALLED, out.stderr
    last = json.loads((tmp_path / HEARTBEAT).read_text())
    assert (last["phase"], last["stalled_reward"], last["reward_timeout_s"]) == ("failed", "never_returns", 1.0)
    assert last["stuck_at"].endswith("in never_returns") and "guarded_rewards.py:" in last["stuck_at"]
    stacks = Path(last["stacks"])
    assert stacks.parent == tmp_path / STACKS_DIR and "in never_returns" in stacks.read_text()
    assert "reward function 'never_returns' ran past reward.timeout_s=1 s" in out.stderr
    assert took < 30


def test_a_reward_within_its_timeout_returns_as_usual(tmp_path):
    """The counter-test: same guard, a reward that returns: its values, exit 0, the heartbeat says scored."""
    out = run_guarded(tmp_path, "quick", 1.0)
    assert out.returncode == 0 and json.loads(out.stdout) == [1.0, 1.0], out.stderr
    last = json.loads((tmp_path / HEARTBEAT).read_text())
    assert (last["stage"], last["reward"]) == ("scored", "quick")
    time.sleep(1.5)  # past the timeout: the cancelled timer did not fire after the call (it would exit 4)


def test_the_guard_keeps_names_kinds_and_announces_each_call(tmp_path):
    from trl.trainer.utils import get_callable_name, is_async_callable

    seen = []

    class Recorder(HeartbeatWriter):
        def __call__(self, phase, step=None, **extra):
            seen.append((phase, step, extra.get("stage"), extra.get("reward")))

    rec = Recorder(tmp_path, enabled=True)

    def accuracy(completions, **kwargs):
        return [0.5] * len(completions)

    async def judge(completions, **kwargs):
        return [1.0] * len(completions)

    class Scorer:
        def __call__(self, completions, **kwargs):
            return [2.0] * len(completions)

    class State:
        global_step = 4

    sync, coro, obj = guard(accuracy, 5, rec), guard(judge, 5, rec), guard(Scorer(), None, rec)
    assert [get_callable_name(f) for f in (sync, coro, obj)] == ["accuracy", "judge", "Scorer"]
    assert [is_async_callable(f) for f in (sync, coro, obj)] == [False, True, False]
    assert sync(completions=["x"], trainer_state=State()) == [0.5]
    assert asyncio.run(coro(completions=["x"])) == [1.0]
    assert obj(completions=["x"]) == [2.0]
    assert seen[:2] == [(TrainerPhase.STEP, 5, "reward", "accuracy"), (TrainerPhase.STEP, 5, "scored", "accuracy")]
    assert [s[2:] for s in seen[2:]] == [("reward", "judge"), ("scored", "judge"), ("reward", "Scorer"),
                                         ("scored", "Scorer")]
    assert callable_name(obj) == "Scorer"
