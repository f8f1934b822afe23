"""What validation reports and what it knows: Problem, Facts, InvalidConfig and the exit code of an
invalid configuration. A shared leaf: it imports nothing else of the launcher's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

EXIT_INVALID_CONFIG = 2  # documented in the README: invalid configuration, nothing submitted


@dataclass(frozen=True)
class Problem:
    keys: tuple[str, ...]
    message: str
    severity: str = "error"  # "error" stops the launch; "warning" is printed

    def __str__(self) -> str:
        return f"{', '.join(self.keys)}: {self.message}"


@dataclass(frozen=True)
class Facts:
    """What the backend could learn about where the job will run (None = unknown)."""

    local_gpus: Optional[int] = None  # GPUs on this machine (local backend)
    # sinfo: name -> {"gpus_per_node", "nodes", "max_time_s", and when sinfo said: "cpus_per_node", "mem_mb_per_node"}
    partitions: Optional[dict[str, dict[str, Any]]] = None
    default_partition: Optional[str] = None
    slurm_error: Optional[str] = None  # sinfo's error when this machine has no Slurm configuration
    job_python: Optional[str] = None  # the interpreter the nodes run (cluster.python, else the launcher's)
    modules: Optional[dict[str, bool]] = None  # top-level module of each reward function -> job_python finds it


class InvalidConfig(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
