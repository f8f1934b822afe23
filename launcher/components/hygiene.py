"""Node hygiene each step wrapper does before it execs its component, the things recipes do by hand:

- NCCL's async error handling on (TORCH_NCCL_ASYNC_ERROR_HANDLING=1, unless set): a rank whose collective
  failed or timed out tears its process down instead of hanging in the collective, so the supervisor sees
  an exit, not a silent heartbeat;
- the open-file limit raised to the hard limit (capped at 1048576): vLLM's API server, tokenizer threads,
  data loaders and NCCL's sockets pass the common soft limit of 1024 ("Too many open files");
- stale shared-memory files cleaned, from the second attempt on: a SIGKILLed vLLM leaves its POSIX shared
  memory (`psm_*`, `vllm_*`, `sem.mp-*` in /dev/shm) behind, and a requeued attempt on the same node would
  find /dev/shm filling up. Only files of this user, made since the job was launched (plan.json's time),
  that no process on the node has open or mapped are removed: what this job's earlier attempts left, and
  never a file a live process uses (a name /dev/shm holds that nobody maps is garbage, whoever made it).

The decisions are pure (`stale_shm`, `open_files_target`); `prepare_node` is the edge that applies them.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

SHM_DIR = Path("/dev/shm")
SHM_PATTERNS = ("psm_", "vllm", "sem.mp-")  # Python SharedMemory (vLLM's broadcast queues), vLLM's mmaps, semaphores
NOFILE_CAP = 1048576
NCCL_ASYNC = "TORCH_NCCL_ASYNC_ERROR_HANDLING"


@dataclass(frozen=True)
class ShmEntry:
    name: str
    uid: int
    mtime: float


def stale_shm(entries: Iterable[ShmEntry], uid: int, since: float, in_use: set[str]) -> list[str]:
    """The shared-memory files to remove: this user's, of the launcher's patterns, made at or after `since`,
    and open or mapped by no process."""
    return sorted(e.name for e in entries
                  if e.uid == uid and e.name.startswith(SHM_PATTERNS) and e.mtime >= since and e.name not in in_use)


def open_files_target(soft: int, hard: int) -> int:
    """The soft limit to set: the hard limit (capped), never lower than today's."""
    hard_value = NOFILE_CAP if hard == resource.RLIM_INFINITY else hard
    return max(soft, min(hard_value, NOFILE_CAP)) if soft != resource.RLIM_INFINITY else soft


def raise_open_files() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit (inherited across exec); (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = open_files_target(soft, hard)
    if target != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
    return soft, target


def shm_entries(shm_dir: Path = SHM_DIR) -> list[ShmEntry]:
    entries = []
    try:
        names = os.listdir(shm_dir)
    except OSError:
        return []
    for name in names:
        try:
            st = os.lstat(shm_dir / name)
        except OSError:
            continue
        entries.append(ShmEntry(name, st.st_uid, st.st_mtime))
    return entries


def shm_in_use(shm_dir: Path = SHM_DIR, proc: Path = Path("/proc")) -> set[str]:
    """Names in shm_dir that some process this user can see has open (fd) or mapped (maps)."""
    prefix = str(shm_dir).rstrip("/") + "/"
    used: set[str] = set()
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:
            with open(proc / pid / "maps") as maps:
                for line in maps:
                    at = line.find(prefix)
                    if at >= 0:
                        used.add(line[at + len(prefix):].split()[0])
        except OSError:
            pass
        try:
            for fd in os.listdir(proc / pid / "fd"):
                target = os.readlink(proc / pid / "fd" / fd)
                if target.startswith(prefix):
                    used.add(target[len(prefix):].split()[0])
        except OSError:
            pass
    return used


def clean_stale_shm(since: float, shm_dir: Path = SHM_DIR) -> list[str]:
    """Remove the stale files (see the module docstring); the names removed."""
    removed = []
    for name in stale_shm(shm_entries(shm_dir), os.getuid(), since, shm_in_use(shm_dir)):
        try:
            os.unlink(shm_dir / name)
            removed.append(name)
        except OSError:
            pass
    return removed


def prepare_node(env: dict[str, str], launched_at: Optional[float]) -> dict:
    """Apply the hygiene for this step (env is what the component will exec with); what was done, for the
    node's record."""
    env.setdefault(NCCL_ASYNC, "1")
    before, after = raise_open_files()
    removed = clean_stale_shm(launched_at) if launched_at is not None else []
    return {"nccl_async_error_handling": env[NCCL_ASYNC], "open_files": {"before": before, "after": after},
            "stale_shm_removed": removed}
