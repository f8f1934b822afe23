"""How the supervisor starts and stops a component: an srun step (Slurm) or a local process group,
and what srun said about it (a controller it could not reach, a node that failed).

Both backends give a Step with poll/terminate/kill/stop/output (and signal: the local process group); the
supervisor does not know which it runs on, and tests hand it fake steps. SlurmSteps.signal_stacks asks
every process of a component for its stacks on each of its nodes (a helper step, launcher/faulthandlers.py).
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Mapping, Optional, Protocol

from launcher.jobfolder.logs import tail_text
from launcher.plan.containers import shared_folders, wrap
from launcher.plan.plan import Component, Plan
from launcher.slurm.allocation import component_cpus
from launcher.slurm.transient import srun_transient_line
from launcher.supervisor.clock import Clock, RealClock


STACKS_SRUN_S = 15.0  # the stacks helper step: its start (a step creation) and its run on every node


class Step(Protocol):
    name: str
    pid: int

    def poll(self) -> Optional[int]: ...

    def terminate(self) -> None: ...

    def kill(self) -> Optional[int]: ...

    def stop(self, grace_s: float) -> Optional[int]: ...

    def output(self) -> str: ...


class ProcessStep:
    """A child process in its own session, so that stopping it reaches everything it started."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path):
        self.name = name
        self.argv = argv
        self.log_path = Path(log)
        self._log: IO[bytes] = open(log, "ab", buffering=0)
        self.log_offset = self._log.tell()  # where this start's output begins (a restarted step appends)
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid

    def poll(self) -> Optional[int]:
        return self.proc.poll()

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def signal(self, sig: int) -> None:
        """`sig` to every process of the group (on Slurm that is srun, which forwards only some signals:
        a step's tasks are signalled with scancel, launcher/supervisor/hangs.py)."""
        if self.proc.poll() is None:
            self._signal_group(sig)

    def terminate(self) -> None:
        """SIGTERM to the whole group (srun forwards it to the step's tasks on every node)."""
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)

    def kill(self) -> Optional[int]:
        """SIGKILL to what is left of the group; returns the exit code."""
        # children that outlived their parent (vLLM engine cores, accelerate workers) go too
        self._signal_group(signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
        return self.proc.returncode

    def stop(self, grace_s: float) -> Optional[int]:
        """SIGTERM to the whole group, SIGKILL after grace_s; returns the exit code."""
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def output(self, limit: int = 64 * 1024) -> str:
        """What this start of the step printed so far (its last `limit` bytes)."""
        return tail_text(self.log_path, limit, start=self.log_offset)


def stop_steps(steps: list, grace_s: float, clock: Optional[Clock] = None) -> dict[str, Optional[int]]:
    """Stop several steps together: SIGTERM to all, one shared grace, then SIGKILL; {name: exit code}.
    A hung or frozen step costs one grace period, not one per step."""
    clock = clock or RealClock()
    for step in steps:
        step.terminate()
    deadline = clock.monotonic() + grace_s
    while clock.monotonic() < deadline and any(step.poll() is None for step in steps):
        clock.sleep(0.1)
    return {step.name: step.kill() for step in steps}


SRUN_NODE_FAILURE = re.compile(r"^srun: error: Node failure on (\S+)", re.M)


def srun_node_failures(step) -> list[str]:
    """Nodes srun reported as failed for this step ("srun: error: Node failure on node2"); srun itself
    then exits 0, so this line is the evidence."""
    output = getattr(step, "output", None)
    return sorted(set(SRUN_NODE_FAILURE.findall(output()))) if output is not None else []


def srun_transient_error(step) -> Optional[str]:
    """The srun error line when a step could not be created because slurmctld did not answer."""
    output = getattr(step, "output", None)
    return srun_transient_line(output()) if output is not None else None


def _contained(plan: Plan, component: Component, env: Optional[Mapping[str, str]]) -> tuple[list[str], list[str]]:
    """(srun flags, argv) of the component's step inside its container (plan/containers.py), the job root
    (else the job folder, LAUNCHER_JOB_DIR), the Hugging Face cache the job reads (plan.hf_home) and the compile
    caches (plan.cache_dir) bound at their own paths."""
    job_dir = (os.environ if env is None else env).get("LAUNCHER_JOB_DIR")
    uses_gpus = plan.device != "cpu" and component.gpus_per_node > 0
    return wrap(getattr(component, "container", None), list(component.step), uses_gpus,
                os.path.abspath(job_dir) if job_dir else None, shared_folders(plan))


def _make_bound_folders(plan: Plan, component: Component) -> None:
    """A runtime cannot bind a folder that is not there (ch-run, apptainer: 'no such file'): the shared
    caches a contained step gets are made first, here on the host (the supervisor sees the nodes' storage)."""
    if getattr(component, "container", None) is not None:
        for folder in shared_folders(plan):
            os.makedirs(folder, exist_ok=True)


def _runtime_env(component: Component, env: dict[str, str]) -> dict[str, str]:
    """What the component's runtime needs of the environment: ch-run refuses to start without $USER."""
    container = getattr(component, "container", None)
    if container is not None and container.runtime == "charliecloud" and not env.get("USER"):
        env = dict(env, USER=getpass.getuser())
    return env


def _wrapped(plan: Plan, component: Component, step: Optional[list[str]] = None) -> list[str]:
    """The component's step, after cluster.setup lines run in the same shell (on the host, except under
    pyxis, where srun starts the whole line inside the image)."""
    step = list(component.step) if step is None else step
    if not plan.setup:
        return step
    script = "\n".join(plan.setup) + '\nexec "$@"'
    return ["bash", "-c", script, f"launcher-{component.name}", *step]


class LocalSteps:
    """Components as local processes, each on its own GPUs."""

    def __init__(self, plan: Plan):
        self.plan = plan

    def start(self, component: Component, env: dict[str, str], log: Path) -> Step:
        env = dict(env, LAUNCHER_BACKEND="local")
        if component.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in component.gpus)
        _, step = _contained(self.plan, component, env)  # pyxis is refused for the local backend
        _make_bound_folders(self.plan, component)
        return ProcessStep(component.name, _wrapped(self.plan, component, step), _runtime_env(component, env), log)


def step_name(plan: Plan, component: str) -> str:
    """The Slurm step's name (srun --job-name), by which the supervisor finds the step to signal."""
    return f"{plan.name}-{component}"


class SlurmSteps:
    """Components as srun steps of the heterogeneous job (the supervisor is the batch step)."""

    def __init__(self, plan: Plan):
        self.plan = plan

    def argv(self, component: Component, env: Optional[Mapping[str, str]] = None) -> list[str]:
        argv = ["srun"]
        if self.plan.heterogeneous:
            argv.append(f"--het-group={component.het_group}")
        argv += [f"--nodes={component.nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                 "--export=ALL", f"--job-name={step_name(self.plan, component.name)}"]
        # the step's one task per node gets all of the component's CPUs there (srun 22.05 does not take
        # --cpus-per-task from sbatch; a confined step would otherwise be bound to one CPU)
        cpus = component_cpus(os.environ if env is None else env,
                              component.het_group if self.plan.heterogeneous else None)
        if cpus is not None:
            argv.append(f"--cpus-per-task={cpus}")
        if component.nodes > 1:
            argv.append("--label")
        flags, step = _contained(self.plan, component, env)
        return argv + flags + _wrapped(self.plan, component, step)

    def start(self, component: Component, env: dict[str, str], log: Path) -> Step:
        env = _runtime_env(component, dict(env, LAUNCHER_BACKEND="slurm"))
        _make_bound_folders(self.plan, component)
        return ProcessStep(component.name, self.argv(component, env), env, log)

    def signal_stacks(self, name: str, attempt_dir: Path, timeout_s: float = STACKS_SRUN_S) -> tuple[bool, str]:
        """Ask every process of the component, on each of its nodes, for its stacks: a one-task-per-node step
        beside the component's (--overlap) runs launcher.faulthandlers there. (ok, what it printed)."""
        component = self.plan.component(name)
        argv = ["srun", *([f"--het-group={component.het_group}"] if self.plan.heterogeneous else []),
                f"--nodes={component.nodes}", "--ntasks-per-node=1", "--overlap", "--export=ALL",
                f"--job-name={step_name(self.plan, name)}-stacks", sys.executable, "-m", "launcher.faulthandlers",
                str(attempt_dir), name]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as error:
            return False, f"{shlex.join(argv)}: {error}"
        said = " ".join((out.stdout + out.stderr).split())
        return out.returncode == 0, f"{shlex.join(argv[:argv.index(sys.executable)])} ...: {said}"


def describe(step: Step) -> str:
    argv = getattr(step, "argv", None)
    return shlex.join(argv) if argv else step.name
