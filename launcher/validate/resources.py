"""What each component asks Slurm for besides GPUs: CPUs and memory per node, or whole nodes. The pure
decision (`component_request`), and the rule that rejects what the partition's nodes cannot give.

The defaults never starve a job on a cluster that confines tasks to their cores (task/cgroup): with
sinfo's facts, a component asks for its GPU share of a node (node CPUs x its GPUs / node GPUs; the same
for memory); on nodes without GPUs, for the whole node's CPUs and memory. When sinfo did not answer, it
asks for whole nodes (`--exclusive --mem=0`), unless the keys say how much. `server.cpus_per_gpu`,
`trainer.mem_per_gpu`, ... set the amounts; `cluster.exclusive=true` asks for whole nodes. Flags in
`cluster.sbatch` / `<component>.sbatch` (cpus-per-task, mem, exclusive, ...) win and are passed as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from launcher.config.schema import Backend, LaunchConfig, Mode, ServerConfig, TrainerConfig
from launcher.validate.problems import Facts, Problem
from launcher.validate.sbatch_options import MEMORY, SBATCH_SHORT

UNITS_MB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
# sbatch flags that decide CPUs or memory themselves (the launcher then renders neither of its own)
CPU_FLAGS = ("cpus-per-task", "cpus-per-gpu", "mincpus")
MEM_FLAGS = ("mem", "mem-per-cpu", "mem-per-gpu")


@dataclass(frozen=True)
class ResourceRequest:
    """One component's CPUs and memory per node (one task per node), and why."""

    cpus: Optional[int]  # --cpus-per-task; None: whole node (exclusive) or what an sbatch flag says
    mem_mb: Optional[int]  # --mem in MB; 0: all of the node's memory; None: the site's default or an sbatch flag
    exclusive: bool  # --exclusive: whole nodes
    cpus_why: str  # "2 of 4 CPUs: 1 of 2 GPUs"
    mem_why: str  # "8000 of 16000 MB: 1 of 2 GPUs"
    node_cpus: Optional[int] = None  # CPUs of the partition's nodes (sinfo), when known
    node_mem_mb: Optional[int] = None

    def sbatch(self) -> dict[str, Any]:
        """The #SBATCH flags this request renders (before the component's own sbatch flags, which win)."""
        flags: dict[str, Any] = {}
        if self.exclusive:
            flags["exclusive"] = True
        if self.cpus is not None:
            flags["cpus-per-task"] = self.cpus
        if self.mem_mb is not None:
            flags["mem"] = f"{self.mem_mb}M" if self.mem_mb else 0
        return flags


def memory_mb(text: Any) -> Optional[int]:
    """A memory size as sbatch writes it (64G, 500M, 1T, 64000 = MB) -> MB; None if it is not one."""
    value = str(text).strip()
    if not MEMORY.match(value):
        return None
    digits = value.rstrip("KMGTBkmgtb")
    unit = value[len(digits):].upper().rstrip("B") or "M"
    return int(int(digits) * UNITS_MB[unit])


def node_facts(cfg: LaunchConfig, facts: Facts) -> tuple[Optional[str], dict[str, Any]]:
    """(partition, sinfo's facts about its nodes) the job is judged by: cluster.partition or the default,
    the first of a comma list; ({} when unknown)."""
    partition = cfg.cluster.partition or facts.default_partition
    if partition is None or facts.partitions is None:
        return partition, {}
    partition = str(partition).split(",")[0]
    return partition, dict(facts.partitions.get(partition) or {})


def _sbatch_flags(cfg: LaunchConfig, name: str) -> dict[str, tuple[str, Any]]:
    """The resource flags the user passes for this component: {option: (key, value)}."""
    found = {}
    comp = _component(cfg, name)
    for section, table in (("cluster", cfg.cluster.sbatch), (name, comp.sbatch)):
        for flag, value in table.items():
            bare = str(flag).lstrip("-")
            option = SBATCH_SHORT.get(bare, bare)
            if option in CPU_FLAGS + MEM_FLAGS + ("exclusive",):
                found[option] = (f"{section}.sbatch.{flag}", value)
    return found


def _component(cfg: LaunchConfig, name: str) -> ServerConfig | TrainerConfig:
    return cfg.server if name == "server" else cfg.trainer


def _share(total: int, gpus: int, node_gpus: int) -> int:
    return max(1, total * gpus // node_gpus)


def component_request(cfg: LaunchConfig, name: str, facts: Facts) -> ResourceRequest:
    """What component `name` ("server" or "trainer") asks for on each of its nodes."""
    comp = _component(cfg, name)
    gpus = comp.gpus_per_node
    partition, node = node_facts(cfg, facts)
    node_cpus, node_mem, node_gpus = node.get("cpus_per_node"), node.get("mem_mb_per_node"), node.get("gpus_per_node")
    flags = _sbatch_flags(cfg, name)
    exclusive_flag = flags.get("exclusive")
    exclusive = bool(cfg.cluster.exclusive) or bool(exclusive_flag and exclusive_flag[1] not in (False, None))
    of_gpus = f"{gpus} of {node_gpus} GPUs"
    known = node_cpus is not None and node_mem is not None

    # CPUs
    cpu_option = next((o for o in CPU_FLAGS if o in flags), None)
    if cpu_option is not None:
        key, value = flags[cpu_option]
        cpus, cpus_why = None, f"{key}={value} (passed as it is)"
        if cpu_option == "cpus-per-task" and isinstance(value, int) and not isinstance(value, bool):
            cpus = value
    elif cfg.cluster.exclusive:
        cpus, cpus_why = None, "the whole node: cluster.exclusive=true"
    elif exclusive_flag and exclusive:
        cpus, cpus_why = None, f"the whole node: {exclusive_flag[0]}"
    elif comp.cpus_per_gpu is not None:
        cpus = comp.cpus_per_gpu * gpus
        cpus_why = f"{cpus} CPUs: {name}.cpus_per_gpu={comp.cpus_per_gpu} x {gpus} GPU(s)"
        cpus_why += f" (nodes of {partition!r} have {node_cpus})" if node_cpus else ""
    elif node_cpus is not None and node_gpus:
        cpus = _share(node_cpus, gpus, node_gpus)
        cpus_why = f"{cpus} of {node_cpus} CPUs: {of_gpus}"
    elif node_cpus is not None:
        cpus, cpus_why = node_cpus, f"{node_cpus} of {node_cpus} CPUs: the nodes of {partition!r} have no GPUs"
    else:
        exclusive = True
        cpus, cpus_why = None, (f"the whole node: sinfo did not say what nodes of {partition or 'the partition'!r} "
                                f"have (set {name}.cpus_per_gpu and {name}.mem_per_gpu to ask for less)")

    # memory
    mem_option = next((o for o in MEM_FLAGS if o in flags), None)
    if mem_option is not None:
        key, value = flags[mem_option]
        mem, mem_why = None, f"{key}={value} (passed as it is)"
        if mem_option == "mem":
            mem = memory_mb(value)
    elif comp.mem_per_gpu is not None and memory_mb(comp.mem_per_gpu) is not None:
        mem = memory_mb(comp.mem_per_gpu) * gpus
        mem_why = f"{mem} MB: {name}.mem_per_gpu={comp.mem_per_gpu} x {gpus} GPU(s)"
        mem_why += f" (nodes of {partition!r} have {node_mem} MB)" if node_mem else ""
    elif exclusive:
        mem, mem_why = 0, "all of the node's"
    elif node_mem is not None and node_gpus:
        mem = _share(node_mem, gpus, node_gpus)
        mem_why = f"{mem} of {node_mem} MB: {of_gpus}"
    elif node_mem is not None:
        mem, mem_why = node_mem, f"{node_mem} of {node_mem} MB: the nodes of {partition!r} have no GPUs"
    else:
        mem, mem_why = None, f"the site's default (sinfo did not say; set {name}.mem_per_gpu)"
    return ResourceRequest(cpus=cpus, mem_mb=mem, exclusive=exclusive, cpus_why=cpus_why, mem_why=mem_why,
                           node_cpus=node_cpus if known else None, node_mem_mb=node_mem if known else None)


def components(cfg: LaunchConfig) -> list[str]:
    return (["server"] if cfg.mode == Mode.server else []) + ["trainer"]


def check_resources(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    """The CPU and memory keys: their types, whole nodes or amounts (not both), and amounts the partition's
    nodes can give."""
    if cfg.cluster.backend != Backend.slurm:
        return []
    problems = []
    for name in components(cfg):
        comp = _component(cfg, name)
        cpus_key, mem_key = f"{name}.cpus_per_gpu", f"{name}.mem_per_gpu"
        cpus_ok = comp.cpus_per_gpu is None or (isinstance(comp.cpus_per_gpu, int) and comp.cpus_per_gpu >= 1)
        mem_ok = comp.mem_per_gpu is None or (memory_mb(comp.mem_per_gpu) or 0) > 0
        if not cpus_ok:
            problems.append(Problem((cpus_key,), f"must be a positive integer or null, got {comp.cpus_per_gpu!r}"))
        if not mem_ok:
            problems.append(Problem((mem_key,), f"{comp.mem_per_gpu!r} is not a memory size (64G, 500M, or MB)"))
        if cfg.cluster.exclusive:
            for key, value in ((cpus_key, comp.cpus_per_gpu), (mem_key, comp.mem_per_gpu)):
                if value is not None:
                    problems.append(Problem((key, "cluster.exclusive"),
                                            "cluster.exclusive=true already gives whole nodes: set one of them"))
            continue
        if not (cpus_ok and mem_ok) or not isinstance(comp.gpus_per_node, int) or comp.gpus_per_node < 1:
            continue
        request = component_request(cfg, name, facts)
        partition, node = node_facts(cfg, facts)
        limits = ((cpus_key, comp.cpus_per_gpu, request.cpus, node.get("cpus_per_node"), "CPUs"),
                  (mem_key, comp.mem_per_gpu, request.mem_mb, node.get("mem_mb_per_node"), "MB of memory"))
        for key, value, asked, has, what in limits:
            if value is not None and asked is not None and has is not None and asked > has:
                problems.append(Problem(
                    (key, "cluster.partition"),
                    f"{asked} {what} per node requested ({key}={value} x {comp.gpus_per_node} GPU(s)), but nodes "
                    f"of partition {partition!r} have {has}"))
    return problems
