"""How the supervisor starts a component: an srun step (Slurm) or a local process group.

Both give a Step with poll/stop; the supervisor does not know which backend it runs on.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Optional, Protocol

from .plan import Component, Plan


class Step(Protocol):
    name: str
    pid: int

    def poll(self) -> Optional[int]: ...

    def stop(self, grace_s: float) -> Optional[int]: ...


class ProcessStep:
    """A child process in its own session, so that stopping it reaches everything it started."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path):
        self.name = name
        self.argv = argv
        self._log: IO[bytes] = open(log, "ab", buffering=0)
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid

    def poll(self) -> Optional[int]:
        return self.proc.poll()

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, grace_s: float) -> Optional[int]:
        """SIGTERM to the whole group, SIGKILL after grace_s; returns the exit code."""
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        # children that outlived their parent (vLLM engine cores, accelerate workers) go too
        self._signal_group(signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
        return self.proc.returncode


def _wrapped(plan: Plan, component: Component) -> list[str]:
    """The component's step, after cluster.setup lines run in the same shell."""
    if not plan.setup:
        return list(component.step)
    script = "\n".join(plan.setup) + '\nexec "$@"'
    return ["bash", "-c", script, f"launcher-{component.name}", *component.step]


class LocalSteps:
    """Components as local processes, each on its own GPUs."""

    def __init__(self, plan: Plan):
        self.plan = plan

    def start(self, component: Component, env: dict[str, str], log: Path) -> Step:
        env = dict(env, LAUNCHER_BACKEND="local")
        if component.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in component.gpus)
        return ProcessStep(component.name, _wrapped(self.plan, component), env, log)


class SlurmSteps:
    """Components as srun steps of the heterogeneous job (the supervisor is the batch step)."""

    def __init__(self, plan: Plan):
        self.plan = plan

    def argv(self, component: Component) -> list[str]:
        argv = ["srun"]
        if self.plan.heterogeneous:
            argv.append(f"--het-group={component.het_group}")
        argv += [f"--nodes={component.nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                 "--export=ALL", f"--job-name={self.plan.name}-{component.name}"]
        if component.nodes > 1:
            argv.append("--label")
        return argv + _wrapped(self.plan, component)

    def start(self, component: Component, env: dict[str, str], log: Path) -> Step:
        return ProcessStep(component.name, self.argv(component), dict(env, LAUNCHER_BACKEND="slurm"), log)


def describe(step: Step) -> str:
    argv = getattr(step, "argv", None)
    return shlex.join(argv) if argv else step.name


def wait_any(steps: list[Step], timeout_s: float) -> None:
    """Return when a step ended or timeout_s passed (cheap polling of exit codes)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(s.poll() is not None for s in steps):
            return
        time.sleep(0.1)
