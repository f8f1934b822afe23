"""The CPUs a component's processes share: the trainer's ranks on a node split the CPUs its step was given
(OMP_NUM_THREADS and friends = CPUs / local ranks, unless the user set them). Without this, torch's
launcher sets OMP_NUM_THREADS=1 for every rank, and a library that reads the node's core count instead of
the step's CPUs starts far more threads than the step may use.
"""

from __future__ import annotations

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def threads_per_rank(cpus: int, local_ranks: int) -> int:
    """Each local rank's share of the step's CPUs (at least one)."""
    return max(1, cpus // max(1, local_ranks))


def thread_env(cpus: int, local_ranks: int, env: dict[str, str]) -> dict[str, str]:
    """Set the thread variables the environment does not set yet; {variable: value} as they now are."""
    threads = str(threads_per_rank(cpus, local_ranks))
    for var in THREAD_VARS:
        env.setdefault(var, threads)
    return {var: env[var] for var in THREAD_VARS}
