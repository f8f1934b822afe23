"""What the benchmarks that use the test cluster share: its environment (scripts/slurm-test-cluster up)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cluster_env() -> dict[str, str]:
    """This environment plus the test cluster's (SLURM_CONF and the rest of .slurm/env.sh, unless sourced
    already); exits saying how to start the cluster when there is none."""
    env = dict(os.environ)
    state = Path(env.get("LAUNCHER_TEST_CLUSTER_STATE", REPO / ".slurm"))
    if "SLURM_CONF" not in env and (state / "env.sh").exists():
        for line in (state / "env.sh").read_text().splitlines():
            match = re.match(r"^export (\w+)=(.*)$", line.strip())
            if match:
                env[match.group(1)] = match.group(2).split("#")[0].strip().strip("'\"")
    if "SLURM_CONF" not in env:
        sys.exit("no test cluster: run scripts/slurm-test-cluster up; source .slurm/env.sh")
    return env
