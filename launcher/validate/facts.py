"""What can be learned cheaply about where a job will run, for validation and the components' CPU and
memory requests: the GPUs of this machine (the local backend) or the partitions sinfo lists (Slurm: GPUs,
CPUs and memory per node, node counts, time limits). One command each.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from typing import Optional

from launcher.config.schema import Backend, LaunchConfig
from launcher.node import gpu_count
from launcher.validate.job_python import reward_module_facts
from launcher.validate.problems import Facts
from launcher.walltime import parse_walltime


def gather_facts(cfg: LaunchConfig) -> Facts:
    """The facts the rules of cfg's backend need, and what the job's Python can import."""
    facts = Facts(local_gpus=local_gpu_count()) if cfg.cluster.backend == Backend.local else slurm_facts()
    python, modules = reward_module_facts(cfg)
    return dataclasses.replace(facts, job_python=python, modules=modules)


NO_SLURM_CONFIG = "Could not establish a configuration source"  # no slurm.conf, no configless DNS record


def local_gpu_count() -> int:
    """GPUs on this machine (launcher.node.gpu_count, the launcher's one GPU probe; no torch import)."""
    return gpu_count()


SINFO_FORMAT = "%R|%G|%D|%l|%P|%c|%m"  # partition, GRES, nodes, time limit, name (* = default), CPUs, memory MB


def _gpus(gres: str) -> int:
    gpus = 0
    for item in gres.split(","):
        fields = item.split("(")[0].split(":")
        if fields[0] == "gpu" and fields[-1].isdigit():
            gpus = max(gpus, int(fields[-1]))
    return gpus


def _count(text: str) -> Optional[int]:
    """sinfo's CPUs/memory of a node group ("64", or "64+" for mixed nodes with -s: the smallest)."""
    text = text.strip().rstrip("+")
    return int(text) if text.isdigit() else None


def parse_sinfo(text: str) -> tuple[dict[str, dict], str | None]:
    """`sinfo -h -o SINFO_FORMAT` -> ({partition: {gpus_per_node, nodes, max_time_s[, cpus_per_node,
    mem_mb_per_node]}}, default). sinfo prints one line per group of like nodes; GPUs per node is the
    largest group's, and CPUs and memory per node are those of the nodes with the most GPUs (the smallest
    such nodes when several groups tie): what a GPU component lands on. Lines without the last two fields
    (the format of older launchers) give no CPU or memory facts."""
    partitions: dict[str, dict] = {}
    best: dict[str, tuple] = {}  # partition -> (gpus, cpus, mem) of the node group CPUs/memory come from
    default = None
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) not in (5, 7):
            continue
        name, gres, nodes, limit, shown = parts[:5]
        if shown.endswith("*"):
            default = name
        gpus = _gpus(gres)
        try:
            max_time = None if limit in ("infinite", "UNLIMITED", "n/a") else parse_walltime(limit)
        except ValueError:
            max_time = None
        entry = partitions.setdefault(name, {"gpus_per_node": 0, "nodes": 0, "max_time_s": max_time})
        entry["gpus_per_node"] = max(entry["gpus_per_node"], gpus)
        entry["nodes"] += int(nodes) if nodes.isdigit() else 0
        if len(parts) == 7:
            cpus, mem = _count(parts[5]), _count(parts[6])
            if cpus is None or mem is None:
                continue
            # more GPUs first; among equals, the smaller node (a component must fit any of them)
            key = (gpus, -cpus, -mem)
            if name not in best or key > best[name]:
                best[name] = key
                entry["cpus_per_node"], entry["mem_mb_per_node"] = cpus, mem
    return partitions, default


def slurm_facts() -> Facts:
    """Partitions, their GPUs, CPUs and memory per node, node counts and time limits, when sinfo answers."""
    if shutil.which("sinfo") is None:
        return Facts()
    conf = os.environ.get("SLURM_CONF")
    if conf and not os.path.exists(conf):  # sinfo and sbatch would retry for a minute, then fail
        return Facts(slurm_error=f"SLURM_CONF={conf} does not exist")
    out = None
    for attempt in range(2):  # one more try after a moment: slurmctld may be restarting
        try:
            out = subprocess.run(["sinfo", "-h", "-o", SINFO_FORMAT], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            out = None
        if out is not None and out.returncode == 0:
            break
        if attempt == 0:
            time.sleep(2)
    if out is not None and out.returncode != 0 and NO_SLURM_CONFIG in out.stderr:
        # not a controller away but no cluster configured here: check_slurm_controller says so (exit 2)
        return Facts(slurm_error=f"sinfo says: {out.stderr.strip().splitlines()[-1]}")
    if out is None or out.returncode != 0:
        # unknown facts skip the partition checks; say so rather than pretend they ran
        print("launcher: note: sinfo did not answer; partition, GPU and time-limit checks skipped, and each "
              "component asks for whole nodes (docs/cluster-cookbook.md)", file=sys.stderr)
        return Facts()
    partitions, default = parse_sinfo(out.stdout)
    return Facts(partitions=partitions or None, default_partition=default)
