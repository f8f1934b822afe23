"""Rules on the Slurm side: the `#SBATCH` flags a config may add (known options, values sbatch accepts,
none the launcher renders itself), Slurm names, and what sinfo says about the partition (GPUs per node,
nodes, time limit).
"""

from __future__ import annotations

import difflib
from typing import Any, Optional

from launcher.config.schema import Backend, Device, LaunchConfig, Mode
from launcher.validate.problems import Facts, Problem
from launcher.validate.sbatch_options import (LAUNCHER_OWNED_SBATCH, MEMORY, SBATCH_FLAG, SBATCH_FLAGS,
                                              SBATCH_OPTIONAL_VALUE, SBATCH_OPTIONS, SBATCH_REFUSED, SBATCH_SHORT,
                                              SLURM_NAME)
from launcher.walltime import parse_walltime


def _multiline(value: Any) -> bool:
    return isinstance(value, str) and ("\n" in value or "\r" in value or "\0" in value)


def _sbatch_value_problem(option: str, value: Any) -> Optional[str]:
    if _multiline(value):
        return "an #SBATCH value cannot contain a newline"
    if option in SBATCH_FLAGS:
        return None if isinstance(value, bool) else f"--{option} takes no value: set it to true or false"
    if value is True and option not in SBATCH_OPTIONAL_VALUE:
        return f"--{option} needs a value"
    if option in ("mem", "mem-per-cpu", "mem-per-gpu") and not (value is None or MEMORY.match(str(value))):
        return f"{value!r} is not a memory size sbatch accepts (a number of MB, or with a unit: 64G, 500M)"
    if option in ("cpus-per-task", "mincpus", "ntasks-per-gpu", "cpus-per-gpu") and not (
            isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return f"must be a positive integer, got {value!r}"
    return None


def check_sbatch(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    problems = []
    flags = {"cluster": cfg.cluster.sbatch, "server": cfg.server.sbatch, "trainer": cfg.trainer.sbatch}
    for section, table in flags.items():
        for flag, value in table.items():
            key = f"{section}.sbatch.{flag}"
            bare = str(flag).lstrip("-")
            option = SBATCH_SHORT.get(bare, bare)
            if not SBATCH_FLAG.match(bare):
                problems.append(Problem((key,), "is not an sbatch option name"))
            elif option in LAUNCHER_OWNED_SBATCH:
                problems.append(Problem((key,), f"is rendered by the launcher; set {LAUNCHER_OWNED_SBATCH[option]}"))
            elif option not in SBATCH_OPTIONS:
                close = difflib.get_close_matches(option, sorted(SBATCH_OPTIONS), n=1)
                hint = f"; did you mean {section}.sbatch.{close[0]}?" if close else ""
                problems.append(Problem((key,), f"--{option} is not an sbatch option (Slurm 22.05){hint}"))
            elif option in SBATCH_REFUSED:
                problems.append(Problem((key,), f"is not allowed: {SBATCH_REFUSED[option]}"))
            else:
                why = _sbatch_value_problem(option, value)
                if why:
                    problems.append(Problem((key,), why))
    c = cfg.cluster
    values = {"cluster.partition": c.partition, "cluster.account": c.account, "cluster.qos": c.qos,
              "cluster.constraint": c.constraint, "cluster.time": c.time}
    for key, value in values.items():
        if _multiline(value):
            problems.append(Problem((key,), "an #SBATCH value cannot contain a newline"))
        elif key in ("cluster.partition", "cluster.account", "cluster.qos") and value is not None and \
                not SLURM_NAME.match(str(value)):
            problems.append(Problem((key,), f"{value!r} is not a Slurm {key.split('.')[1]} name "
                                            "(letters, digits, '.', '_', '-'; partitions may be a comma list)"))
    return problems


def check_slurm_controller(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    """sbatch is on PATH but this machine belongs to no Slurm cluster: sbatch would only fail with "Could
    not establish a configuration source"."""
    if cfg.cluster.backend != Backend.slurm or not facts.slurm_error:
        return []
    # a dry-run still prints the plan (it submits nothing): a warning there, an error for a submission
    return [Problem(("cluster",), f"sbatch is on PATH, but this machine has no Slurm configuration, so no "
                                  f"controller can be reached ({facts.slurm_error}). On a Slurm login node, point "
                                  "SLURM_CONF at the cluster's slurm.conf; to run on this machine instead, add "
                                  "cluster=local", severity="warning" if cfg.dry_run else "error")]


def check_slurm_facts(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    if cfg.cluster.backend != Backend.slurm or facts.partitions is None:
        return []
    partition = cfg.cluster.partition or facts.default_partition
    if partition is None or not SLURM_NAME.match(str(partition)):
        return []
    missing = [p for p in str(partition).split(",") if p not in facts.partitions]
    if missing:
        return [Problem(("cluster.partition",),
                        f"partition {missing[0]!r} does not exist (sinfo lists: {', '.join(sorted(facts.partitions))})")]
    partition = str(partition).split(",")[0]  # sbatch picks one of a list; judge by the first
    info = facts.partitions[partition]
    problems = []
    server_mode = cfg.mode == Mode.server
    components = [("trainer", cfg.trainer.gpus_per_node)] + ([("server", cfg.server.gpus_per_node)] if server_mode else [])
    for name, gpus_per_node in components:
        if cfg.device == Device.cpu:
            break  # no GPUs are requested (--gpus-per-node is not rendered)
        if info.get("gpus_per_node") is not None and gpus_per_node > info["gpus_per_node"]:
            problems.append(Problem((f"{name}.gpus_per_node", "cluster.partition"),
                                    f"{gpus_per_node} GPUs per node requested, but nodes of partition "
                                    f"{partition!r} have at most {info['gpus_per_node']}"))
    needed = cfg.trainer.nodes + (cfg.server.nodes if server_mode else 0)
    if info.get("nodes") is not None and needed > info["nodes"]:
        problems.append(Problem(("server.nodes", "trainer.nodes", "cluster.partition"),
                                f"{needed} nodes needed (components never share a node), partition {partition!r} "
                                f"has {info['nodes']}"))
    if info.get("max_time_s") is not None:
        try:
            if parse_walltime(cfg.cluster.time) > info["max_time_s"]:
                problems.append(Problem(("cluster.time",),
                                        f"exceeds the time limit of partition {partition!r} ({info['max_time_s']} s)"))
        except ValueError:
            pass
    return problems
