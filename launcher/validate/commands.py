"""Rules on what the components run: pass-through flags (`server.extra_args`, `trainer.extra_args`) that
would fight the launcher's own, and the reward functions' import paths.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from launcher.config.schema import LaunchConfig, Mode
from launcher.validate.problems import Facts, Problem

# `trl vllm-serve` flags the launcher sets from the config (key to set instead)
SERVER_OWNED_FLAGS = {
    "model": "model.name_or_path", "revision": "model.revision", "host": "server.host", "port": "server.port",
    "tensor-parallel-size": "server.tensor_parallel_size", "data-parallel-size": "server.data_parallel_size",
    "gpu-memory-utilization": "server.gpu_memory_utilization", "max-model-len": "server.max_model_len",
    "enforce-eager": "server.enforce_eager", "trust-remote-code": "model.trust_remote_code",
    "distributed-executor-backend": "server.distributed_executor_backend",
}
# vLLM's own multi-node launch (`vllm serve --nnodes N --node-rank K --headless`): nothing starts the other nodes
MULTI_NODE_FLAGS = ("nnodes", "node-rank", "headless", "master-addr", "master-port", "data-parallel-address")
# `accelerate launch` flags the launcher sets from the topology
TRAINER_OWNED_FLAGS = {
    "config-file": "trainer.strategy", "num-machines": "trainer.nodes",
    "num-processes": "trainer.nodes x trainer.gpus_per_node", "machine-rank": "(set per node in the job)",
    "main-process-ip": "(trainer node 0, found in the job)", "main-process-port": "trainer.main_process_port",
}
IMPORT_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def _flag(arg: Any) -> Optional[str]:
    """`--tensor_parallel_size=2` -> "tensor-parallel-size"; None for values and short options."""
    if not isinstance(arg, str) or not arg.startswith("--"):
        return {"-tp": "tensor-parallel-size", "-dp": "data-parallel-size"}.get(arg) if isinstance(arg, str) else None
    return arg[2:].split("=", 1)[0].replace("_", "-").lower()


def check_extra_args(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    """Pass-through flags must not fight the ones the launcher sets (the last one wins, silently)."""
    problems = []
    if cfg.mode == Mode.server:
        for arg in cfg.server.extra_args:
            flag = _flag(arg)
            if flag in SERVER_OWNED_FLAGS:
                problems.append(Problem(("server.extra_args",),
                                        f"{arg} is set by the launcher; use {SERVER_OWNED_FLAGS[flag]} instead"))
            elif flag in MULTI_NODE_FLAGS:
                problems.append(Problem(("server.extra_args",),
                                        f"{arg} is vLLM's multi-node launch, and the launcher starts no other server "
                                        "node: a server spans one node (docs/cluster-cookbook.md)"))
            elif flag == "api-key":
                problems.append(Problem(("server.extra_args",),
                                        "--api-key breaks training: TRL's client sends no key, so /v1/* answers 401 "
                                        "(and vLLM's development endpoints stay unauthenticated; docs/security.md)"))
    for arg in cfg.trainer.extra_args:
        flag = _flag(arg)
        if flag in TRAINER_OWNED_FLAGS:
            problems.append(Problem(("trainer.extra_args",),
                                    f"{arg} is set by the launcher; use {TRAINER_OWNED_FLAGS[flag]} instead"))
    return problems


def check_rewards(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    funcs, weights = cfg.reward.funcs, cfg.reward.weights
    problems = []
    if not funcs:
        problems.append(Problem(("reward.funcs",), "needs at least one reward function import path"))
    for f in funcs:
        if not IMPORT_PATH.match(str(f)):
            problems.append(Problem(("reward.funcs",), f"{f!r} is not an import path like trl.rewards.accuracy_reward"))
    if weights is not None and len(weights) != len(funcs):
        problems.append(Problem(("reward.weights", "reward.funcs"),
                                f"{len(weights)} weights for {len(funcs)} reward functions"))
    elif weights and funcs and all(w == 0 for w in weights):
        problems.append(Problem(("reward.weights",), "every weight is 0: every reward, so every advantage, is 0 "
                                                     "and GRPO learns nothing"))
    if cfg.reward.timeout_s is not None and not cfg.reward.timeout_s > 0:
        problems.append(Problem(("reward.timeout_s",), f"must be > 0 seconds, or null for no limit; got "
                                                       f"{cfg.reward.timeout_s!r}"))
    return problems


def check_reward_modules(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    """A reward function whose module the job's Python cannot find fails in the job, after the queue:
    said here, from what that interpreter answered (launcher/validate/job_python.py; nothing imported)."""
    if not facts.modules:
        return []
    problems = []
    for func in cfg.reward.funcs:
        top = str(func).split(".")[0]
        if facts.modules.get(top) is False:
            setup = " (cluster.setup may change that in the job: check it)" if cfg.cluster.setup else ""
            # a dry-run still prints the plan (a light login-node install has no trl): a warning there
            problems.append(Problem(
                ("reward.funcs",),
                f"{func!r}: no module {top!r} for {facts.job_python} (the job's Python){setup}: install it "
                "there, set cluster.python to an interpreter that has it, or put the folder that holds it on "
                "PYTHONPATH (cluster.env.PYTHONPATH)",
                severity="warning" if cfg.cluster.setup or cfg.dry_run else "error"))
    return problems
