"""What Slurm gave the job, read from the environment of its batch step: CPUs per node of each component
(SLURM_JOB_CPUS_PER_NODE[_HET_GROUP_N], e.g. "4", "4(x2)" or "8,4(x2)").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Optional

_GROUP = re.compile(r"^(\d+)(?:\(x\d+\))?$")


def cpus_per_node(value: str) -> Optional[int]:
    """The smallest CPU count in a SLURM_JOB_CPUS_PER_NODE value (what every node of a step can be given);
    None when it is not one."""
    counts = []
    for part in str(value).split(","):
        match = _GROUP.match(part.strip())
        if not match:
            return None
        counts.append(int(match.group(1)))
    return min(counts) if counts else None


def component_cpus(env: Mapping[str, str], het_group: Optional[int]) -> Optional[int]:
    """CPUs per node the job has for het group `het_group` (None: a plain job), None when Slurm did not say."""
    name = "SLURM_JOB_CPUS_PER_NODE" + (f"_HET_GROUP_{het_group}" if het_group is not None else "")
    value = env.get(name)
    return cpus_per_node(value) if value else None
