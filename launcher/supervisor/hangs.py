"""Before the supervisor ends a hang (the trainer's watchdog, the server's /health silence or its startup
timeout): ask the hung component's processes for their Python stacks and write what it captured into
attempt-N/hang-<component>.txt, which the failure reason names.

- Stacks. Every process of the job registered faulthandler on SIGURG at its start (launcher/faulthandlers.py:
  the trainer's entry point on every rank, vLLM's processes through the `launcher_stacks` plugin), each
  with its own file stacks/<component>-<host>-<pid>.txt. Local backend: SIGURG to the step's process
  group; Slurm: a one-task-per-node helper step beside the component's (`srun --overlap ... python -m
  launcher.faulthandlers`) signals every process of the component on each of its nodes (`scancel
  --signal=URG <step>` reaches only a step's tasks, not the processes they started: the fallback). The
  files are read back once every one has grown, or none grew for QUIET_S, and for at most CAPTURE_S: the
  hang still ends within seconds.
- nvidia-smi, where the command exists on the supervisor's node (on Slurm the batch node, the server's
  node 0), bounded by NVIDIA_SMI_S; a GPU whose driver hangs must not hang the supervisor too.
- The last TAIL_LINES lines of each component's log.
A frozen process (SIGSTOP) cannot answer: the report says no process answered. Stack files nobody asked
for stay empty and are removed when the attempt ends (remove_empty_stacks).
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from launcher.faulthandlers import SIGNAL_NAME, STACKS_SIGNAL
from launcher.jobfolder.logs import tail
from launcher.jobfolder.names import STACKS_DIR, component_log, hang_report
from launcher.supervisor.clock import Clock
from launcher.supervisor.verdicts import End

CAPTURE_S = 5.0  # the longest the stacks are waited for after the signal
QUIET_S = 1.0  # ... or until no file grew for this long (a process that cannot answer never will)
LOOK_S = 0.1
NVIDIA_SMI_S = 5.0
TAIL_LINES = 40
STACK_BYTES = 256 * 1024  # per process: a vLLM process with many threads dumps tens of KB
COMPONENTS = ("trainer", "server")


@dataclass(frozen=True)
class Capture:
    path: Path  # hang-<component>.txt
    asked: str  # how the stacks were asked for; "" when no process could be signalled
    answered: list[str] = field(default_factory=list)  # the stack files that received a dump
    nvidia_smi: bool = False

    def summary(self) -> str:
        """What the failure reason says was captured, and where."""
        if self.answered:
            return (f"Python stacks of {len(self.answered)} process(es){', nvidia-smi' if self.nvidia_smi else ''} "
                    f"and log tails in {self.path}")
        if self.asked:
            return f"no process answered for its Python stacks (frozen?); log tails in {self.path}"
        return f"log tails in {self.path} (its processes could not be asked for their Python stacks)"


def stack_sizes(attempt_dir: Path, component: str) -> dict[Path, int]:
    try:
        return {p: p.stat().st_size for p in (Path(attempt_dir) / STACKS_DIR).glob(f"{component}-*.txt")}
    except OSError:
        return {}


def ask_for_stacks(backend: str, step, slurm, step_name: str, runner=None, attempt_dir: Optional[Path] = None) -> str:
    """Signal every process of the component; how it was done ("" when it could not be). Slurm: a helper
    step on the component's nodes signals them all (runner.signal_stacks); if it cannot start, scancel
    --signal, which reaches the step's tasks only."""
    if step is None or step.poll() is not None:
        return ""
    if backend == "slurm":
        helper = getattr(runner, "signal_stacks", None)
        if helper is not None:
            ok, said = helper(step.name, attempt_dir)
            if ok:
                return said
        signal_step = getattr(slurm, "signal_step", None)
        ids = signal_step(step_name, SIGNAL_NAME) if signal_step is not None else []
        return f"scancel --signal={SIGNAL_NAME} {' '.join(ids)}" if ids else ""
    send = getattr(step, "signal", None)
    if send is None:
        return ""
    send(STACKS_SIGNAL)
    return f"SIG{SIGNAL_NAME} to process group {step.pid}"


def wait_for_stacks(attempt_dir: Path, component: str, before: dict[Path, int], clock: Clock,
                    bound_s: float = CAPTURE_S) -> dict[Path, int]:
    """The stack files that grew since `before` (path -> size before), once all did, or none grew for
    QUIET_S, or after bound_s."""
    start = clock.monotonic()
    grown: dict[Path, int] = {}
    changed = start
    while True:
        sizes = stack_sizes(attempt_dir, component)
        now_grown = {p: s for p, s in sizes.items() if s > before.get(p, 0)}
        if now_grown != grown:
            grown, changed = now_grown, clock.monotonic()
        still = clock.monotonic() - changed  # a dump is many small writes: done once the sizes stay put
        everyone = len(grown) == len(sizes)
        if clock.monotonic() - start >= bound_s or (grown and still >= (2 * LOOK_S if everyone else QUIET_S)):
            return grown
        clock.sleep(LOOK_S)


def nvidia_smi(timeout_s: float = NVIDIA_SMI_S) -> Optional[str]:
    """`nvidia-smi`'s output where the command exists, else None."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        proc = subprocess.Popen([exe], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as e:
        return f"(nvidia-smi could not run: {e})"
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        return out
    except subprocess.TimeoutExpired:
        proc.kill()  # not waited for: a process stuck in the driver may not die at once
        return f"(nvidia-smi did not answer within {timeout_s:g} s)"


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(STACK_BYTES)
        return data.decode(errors="replace")
    except OSError as e:
        return f"(unreadable: {e})"


def capture(attempt_dir: Path, component: str, backend: str, step, slurm, step_name: str, clock: Clock,
            reason: str, runner=None) -> Capture:
    """Ask for the stacks, wait (bounded), then write hang-<component>.txt with everything captured."""
    attempt_dir = Path(attempt_dir)
    before = stack_sizes(attempt_dir, component)
    asked = ask_for_stacks(backend, step, slurm, step_name, runner, attempt_dir)
    grown = wait_for_stacks(attempt_dir, component, before, clock) if asked else {}
    smi = nvidia_smi()
    host = socket.gethostname()
    lines = [f"hang of the {component}: {reason}",
             f"captured by the supervisor on {host} at {dt.datetime.now().isoformat(timespec='seconds')}",
             f"stacks asked for with: {asked or 'nothing (no running process to signal)'}",
             f"answered: {len(grown)} of {len(stack_sizes(attempt_dir, component))} stack file(s) of the {component} "
             f"in {attempt_dir / STACKS_DIR}"]
    for path in sorted(grown):
        lines += ["", f"=== {STACKS_DIR}/{path.name} (what it wrote on the request)",
                  _read_from(path, before.get(path, 0))]
    if smi is not None:
        lines += ["", f"=== nvidia-smi on {host}", smi]
    for name in (component, *[c for c in COMPONENTS if c != component]):
        log = attempt_dir / component_log(name)
        if log.exists():
            lines += ["", f"=== last {TAIL_LINES} lines of {log.name}", tail(log, TAIL_LINES)]
    path = attempt_dir / hang_report(component)
    path.write_text("\n".join(lines) + "\n")
    return Capture(path, asked, [p.name for p in sorted(grown)], smi is not None)


def remove_empty_stacks(attempt_dir: Path) -> None:
    """The stack files nobody asked for (every process opens one at its start), and the folder if empty."""
    folder = Path(attempt_dir) / STACKS_DIR
    try:
        for path in folder.glob("*.txt"):
            if path.stat().st_size == 0:
                path.unlink()
        folder.rmdir()
    except OSError:
        pass  # not there, or holds dumps


def diagnose(end: End, attempt_dir: Path, backend: str, step, slurm, step_name: str, clock: Clock,
             log: Callable[[str], None], runner=None) -> Optional[Capture]:
    """The capture for an End that declares a component hung (End.diagnose), else None. A capture that
    fails is logged and never stops the ending."""
    if not end.diagnose:
        return None
    try:
        found = capture(attempt_dir, end.diagnose, backend, step, slurm, step_name, clock, end.reason, runner)
    except Exception as error:  # noqa: BLE001
        log(f"capturing the {end.diagnose}'s stacks failed: {type(error).__name__}: {error}")
        return None
    log(f"{end.diagnose} hung: {found.summary()} (asked with: {found.asked or 'nothing'})")
    return found


def with_capture(reason: str, found: Optional[Capture]) -> str:
    """The reason's first line (result.json's summary) ends naming the capture's file."""
    if found is None:
        return reason
    first, sep, rest = reason.partition("\n")
    return f"{first}; {found.summary()}{sep}{rest}"
