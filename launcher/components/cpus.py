"""The CPUs a component's processes share.

The trainer's ranks on a node split the CPUs its step was given (OMP_NUM_THREADS and friends = CPUs /
local ranks, unless the user set them). Without this, torch's launcher sets OMP_NUM_THREADS=1 for every
rank, and a library that reads the node's core count instead of the step's CPUs starts far more threads
than the step may use.

The vLLM CPU server's workers (TP x PP per engine, DP engines: all on the server's one node) each bind
their OpenMP threads to a CPU list. vLLM's default (`VLLM_CPU_OMP_THREADS_BIND=auto`) gives each worker
one NUMA node and refuses more workers than the step has NUMA nodes ("Not enough allowed NUMA nodes to
bind threads of 2 local CPUWorkers"), which on most nodes means TP or DP above 1 never starts. For more
than one worker the launcher therefore writes the list itself from the CPUs the step holds (its affinity:
under task/cgroup the step's cores), unless the user set the variable. vLLM reads it as one `|`-separated
entry per worker in [DP, PP, TP] order, and each DP engine takes its own slice of TP x PP entries
(vllm/utils/ompmultiprocessing.py). With fewer CPUs than workers the workers share CPUs (the
entries overlap; vLLM checks only the count), which runs, slowly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
BIND_VAR = "VLLM_CPU_OMP_THREADS_BIND"
SYS_CPU = Path("/sys/devices/system/cpu")


def threads_per_rank(cpus: int, local_ranks: int) -> int:
    """Each local rank's share of the step's CPUs (at least one)."""
    return max(1, cpus // max(1, local_ranks))


def thread_env(cpus: int, local_ranks: int, env: dict[str, str]) -> dict[str, str]:
    """Set the thread variables the environment does not set yet; {variable: value} as they now are."""
    threads = str(threads_per_rank(cpus, local_ranks))
    for var in THREAD_VARS:
        env.setdefault(var, threads)
    return {var: env[var] for var in THREAD_VARS}


def physical_core(cpu: int) -> tuple[int, int]:
    """(package, core) of a logical CPU from sysfs; (-1, cpu) when the topology cannot be read."""
    try:
        topology = SYS_CPU / f"cpu{cpu}" / "topology"
        return int((topology / "physical_package_id").read_text()), int((topology / "core_id").read_text())
    except (OSError, ValueError):
        return -1, cpu


def _chunks(items: list, parts: int) -> list[list]:
    """`items` in `parts` contiguous runs as even as can be (the first ones one longer)."""
    size, extra = divmod(len(items), parts)
    runs, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        runs.append(items[start:end])
        start = end
    return runs


def split_cpus(cpus: Sequence[int], workers: int,
               core_of: Callable[[int], tuple[int, int]] = physical_core) -> list[list[int]]:
    """One CPU list per worker from the CPUs the step holds.

    Enough physical cores: each worker gets whole cores, one logical CPU of each (hyperthread siblings
    left out, as vLLM's own x86 binding does). Enough logical CPUs only: contiguous runs of them, siblings
    kept together. Fewer CPUs than workers: worker i gets CPU i mod n (workers share).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    ordered = sorted(set(cpus))
    if not ordered:
        raise ValueError("no CPUs to split")
    cores: dict[tuple[int, int], list[int]] = {}
    for cpu in ordered:
        cores.setdefault(core_of(cpu), []).append(cpu)
    if len(cores) >= workers:
        return [[siblings[0] for siblings in run] for run in _chunks(list(cores.values()), workers)]
    if len(ordered) >= workers:
        return _chunks([cpu for siblings in cores.values() for cpu in siblings], workers)
    return [[ordered[i % len(ordered)]] for i in range(workers)]


def id_list(cpus: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5' (the form vLLM parses)."""
    parts: list[str] = []
    ordered = sorted(cpus)
    start = prev = ordered[0]
    for cpu in ordered[1:] + [None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if cpu is not None:
            start = prev = cpu
    return ",".join(parts)


def bind_value(groups: Sequence[Sequence[int]]) -> str:
    """The VLLM_CPU_OMP_THREADS_BIND text: one id list per worker, '|'-separated ('0-1|2-3')."""
    return "|".join(id_list(group) for group in groups)


@dataclass(frozen=True)
class ServerLayout:
    """The server's local workers: TP x PP per DP engine, DP engines on the one node."""

    tensor_parallel: int = 1
    data_parallel: int = 1
    pipeline_parallel: int = 1

    @property
    def workers(self) -> int:
        return self.tensor_parallel * self.data_parallel * self.pipeline_parallel

    @classmethod
    def of(cls, execs: Sequence[str]) -> "ServerLayout":
        """The layout the server's command line asks for (vLLM's flags; 1 where absent or not a number)."""
        from launcher.components.caches import flag_value

        def size(flag: str) -> int:
            try:
                return max(1, int(flag_value(list(execs), flag)))
            except ValueError:
                return 1
        return cls(size("tensor_parallel_size"), size("data_parallel_size"), size("pipeline_parallel_size"))


def server_binding(layout: ServerLayout, env: dict[str, str],
                   cpus: Optional[Sequence[int]] = None) -> dict[str, object]:
    """Set VLLM_CPU_OMP_THREADS_BIND for more than one worker unless `env` sets it; what the node record
    says about it: the layout, the value and who set it ('environment', 'launcher', or 'vllm' for
    vLLM's own default with one worker), and whether workers share CPUs."""
    held = sorted(os.sched_getaffinity(0) if cpus is None else cpus)
    record: dict[str, object] = {"tensor_parallel": layout.tensor_parallel, "data_parallel": layout.data_parallel,
                                 "pipeline_parallel": layout.pipeline_parallel, "workers": layout.workers,
                                 "cpus": id_list(held) if held else ""}
    if env.get(BIND_VAR):
        record.update(bind=env[BIND_VAR], set_by="environment")
    elif layout.workers == 1:
        record.update(bind="auto", set_by="vllm")  # vLLM's default binds one worker and keeps a CPU for its scheduler
    else:
        env[BIND_VAR] = bind_value(split_cpus(held, layout.workers))
        record.update(bind=env[BIND_VAR], set_by="launcher")
    record["shared"] = record["set_by"] == "launcher" and len(held) < layout.workers
    return record


def describe_binding(record: dict[str, object]) -> str:
    """One line for the server's log."""
    shared = f" (fewer CPUs than workers: they share {record['cpus']})" if record.get("shared") else ""
    return (f"{record['workers']} vLLM CPU worker(s) (TP {record['tensor_parallel']} x DP {record['data_parallel']}"
            f" x PP {record['pipeline_parallel']}), {BIND_VAR}={record['bind']!r} set by {record['set_by']}{shared}")
