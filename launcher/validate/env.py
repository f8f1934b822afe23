"""Rules on environment variables and secrets: valid names, no secret values in `cluster/server/trainer.env`
(they are written into the job folder), no variable the launcher or Slurm sets itself.
"""

from __future__ import annotations

import re

from launcher.config.schema import LaunchConfig
from launcher.validate.problems import Facts, Problem

# environment variables the launcher or Slurm sets in the components; a value in cluster/server/trainer.env breaks that wiring
RESERVED_ENV = re.compile(r"^(LAUNCHER_.*|SLURM_.*|SUBMITIT_.*|CUDA_VISIBLE_DEVICES|VLLM_HOST_IP|MASTER_ADDR|"
                          r"MASTER_PORT|RANK|LOCAL_RANK|WORLD_SIZE)$")
SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|PRIVATE_KEY)", re.I)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECTIONS = ("cluster", "server", "trainer")


def check_env(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    envs = {"cluster": cfg.cluster.env, "server": cfg.server.env, "trainer": cfg.trainer.env}
    secrets = cfg.cluster.secret_env
    problems = []
    for section in SECTIONS:
        for name in envs[section]:
            key = f"{section}.env.{name}"
            if not ENV_NAME.match(name):
                problems.append(Problem((key,), "is not a valid environment variable name"))
            elif SECRET_NAME.search(name):
                problems.append(Problem(
                    (key, "cluster.secret_env"),
                    f"looks like a secret: values in {section}.env are written into the job script; export "
                    f"{name} in your shell and list it in cluster.secret_env instead"))
    for section in SECTIONS:
        for name in envs[section]:
            if ENV_NAME.match(name) and RESERVED_ENV.match(name):
                problems.append(Problem((f"{section}.env.{name}",),
                                        "is set by the launcher or Slurm in each component; setting it breaks "
                                        "the wiring (GPU binding, ranks, the job folder)"))
            elif name in secrets and not SECRET_NAME.search(name):
                problems.append(Problem((f"{section}.env.{name}", "cluster.secret_env"),
                                        f"{name} is a secret (cluster.secret_env): its value comes from your "
                                        f"environment only; remove it from {section}.env, whose values are written "
                                        "into the job folder"))
    for name in secrets:
        if not ENV_NAME.match(name):
            problems.append(Problem(("cluster.secret_env",), f"{name!r} is not a valid environment variable name"))
    return problems
