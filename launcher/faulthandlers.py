"""Python stack dumps on request: the launcher's entry points (and vLLM's processes, through the
`launcher_stacks` general plugin) register faulthandler so the supervisor can ask a hung process
where it is.

`install(component)` opens `<LAUNCHER_ATTEMPT_DIR>/stacks/<component>-<host>-<pid>.txt` and registers
faulthandler on STACKS_SIGNAL for it: on that signal the process appends the stack of every thread,
written by faulthandler's C handler, so it answers while a thread is stuck in a C call, holding the GIL
or not (a Python-level handler runs only when the main thread returns to bytecode). A SIGSTOPped process
answers nothing until continued. The file is opened now because a signal handler cannot open one;
the supervisor removes those left empty when the attempt ends. Outside a launcher job (no
LAUNCHER_ATTEMPT_DIR: vLLM or the trainer run by hand) nothing is installed.

STACKS_SIGNAL is SIGURG. Taken elsewhere: SIGUSR2 (the launcher's checkpoint/requeue signal; the
components ignore it), SIGTERM/SIGINT/SIGHUP/SIGQUIT (Slurm, torch elastic under accelerate launch,
vLLM's shutdown), SIGUSR1 (torch elastic's TORCHELASTIC_SIGNALS_TO_HANDLE, users' `--signal=USR1@N`),
SIGCONT (Slurm's preemption). SIGURG's default action is to ignore it, and it goes to every process of
the component (the local backend signals the process group; on Slurm, signal_component runs on each of
its nodes): a process without the handler (srun, bash, accelerate's launcher process, multiprocessing's
resource tracker) is not harmed, as it would be by a real-time signal or SIGPWR, whose default is to
terminate. Nothing in the job uses socket out-of-band data (SIGURG's only other sender).

Standard library only (imported in every vLLM process); launcher.jobfolder.names is constants only.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import socket
import time
from pathlib import Path
from typing import IO, Optional

from launcher.jobfolder.names import ATTEMPT_DIR_ENV, COMPONENT_ENV, STACKS_DIR, stacks_file

STACKS_SIGNAL = signal.SIGURG
SIGNAL_NAME = "URG"  # as scancel --signal takes it

_installed: dict = {}  # pid -> (component, path, file): per process, so a forked child opens its own
_fork_hook = False


def stacks_path(attempt_dir: Path, component: str, pid: Optional[int] = None) -> Path:
    return Path(attempt_dir) / STACKS_DIR / stacks_file(component, socket.gethostname(), pid or os.getpid())


def install(component: Optional[str] = None) -> Optional[Path]:
    """Register the dump for this process; the file it goes to, or None (outside a job, or it cannot be
    opened). Idempotent per process; safe to call in any process (vLLM calls it in each of its own).
    `component`: the default is LAUNCHER_COMPONENT (the step wrapper sets it), else "server"
    (the plugin runs in vLLM's processes)."""
    global _fork_hook
    pid = os.getpid()
    if pid in _installed:
        return _installed[pid][1]
    attempt = os.environ.get(ATTEMPT_DIR_ENV)
    if not attempt:
        return None
    component = component or os.environ.get(COMPONENT_ENV) or "server"
    path = stacks_path(Path(attempt), component, pid)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f: IO[str] = open(path, "a", buffering=1)
        faulthandler.register(STACKS_SIGNAL, file=f, all_threads=True, chain=False)
    except (OSError, ValueError, RuntimeError):
        return None  # a read-only folder, or no signal support: no dump, never a failure
    _installed[pid] = (component, path, f)
    if not _fork_hook:
        # a forked child (vLLM's engine core and workers under fork) would write into its parent's file
        os.register_at_fork(after_in_child=_after_fork)
        _fork_hook = True
    return path


def _after_fork() -> None:
    parent = next(iter(_installed.values()), None)
    if parent is not None and os.getpid() not in _installed:
        install(parent[0])


def dump(why: str) -> Optional[Path]:
    """This process's stacks now, into its stacks file after a line saying why (the trainer does this
    itself when a reward function runs past reward.timeout_s); None when install() did not run."""
    entry = _installed.get(os.getpid())
    if entry is None:
        return None
    _, path, f = entry
    try:
        f.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()}: {why}\n")
        f.flush()
        faulthandler.dump_traceback(file=f, all_threads=True)
        f.flush()
    except (OSError, ValueError):
        return None
    return path


def signal_component(attempt_dir: str, component: str) -> list[int]:
    """STACKS_SIGNAL to every process on this node that runs `component` of that attempt; the pids signalled.
    A process belongs to it when its environment says so (LAUNCHER_ATTEMPT_DIR and LAUNCHER_COMPONENT), or
    when it descends from one that does: /proc/<pid>/environ is the memory a process got its environment
    in, and setproctitle (vLLM titles its engine core and workers "VLLM::EngineCore", ...) overwrites it
    with the longer title, so those processes' environ reads empty. On Slurm the supervisor runs this on
    the component's nodes (`srun --overlap ... python -m launcher.faulthandlers`): a signal to a step
    (`scancel --signal`) reaches only its tasks, not the processes they started (vLLM's engine core and
    workers, accelerate's ranks)."""
    wanted = {f"{ATTEMPT_DIR_ENV}={attempt_dir}".encode(), f"{COMPONENT_ENV}={component}".encode()}
    parents, named = process_table(wanted)
    found = []
    for pid in sorted(component_tree(parents, named)):
        try:
            os.kill(pid, STACKS_SIGNAL)
            found.append(pid)
        except OSError:
            continue  # gone since
    return found


def process_table(wanted: set) -> tuple[dict[int, int], set[int]]:
    """(pid -> parent pid of every process here, the pids whose environment holds all of `wanted`)."""
    parents: dict[int, int] = {}
    named: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                parents[int(entry)] = int(f.read().rsplit(b")", 1)[1].split()[1])  # the name may hold ")"
            with open(f"/proc/{entry}/environ", "rb") as f:
                if wanted <= set(f.read().split(b"\0")):
                    named.add(int(entry))
        except (OSError, IndexError, ValueError):
            continue  # gone, or not ours to read
    return parents, named


def component_tree(parents: dict[int, int], named: set[int]) -> set[int]:
    """`named` and every process below one of them (pure: the table is read by process_table)."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    tree, todo = set(), list(named)
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo += children.get(pid, [])
    return tree


if __name__ == "__main__":
    import sys

    pids = signal_component(sys.argv[1], sys.argv[2])
    print(f"{socket.gethostname()}: SIG{SIGNAL_NAME} to {len(pids)} process(es) {' '.join(map(str, pids))}", flush=True)
