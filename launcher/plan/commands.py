"""The exact commands the components exec: `trl vllm-serve` (or `vllm serve` with TRL's flags,
server.entrypoint=vllm) for the server, `accelerate launch -m
launcher.train` (or the preflight) for the trainer; with trainer.script `-m launcher.train.user_script
<the script as frozen under <job>/code> <trainer.script_args>` in its place.

Placeholders ({host}, {port}, {machine_rank}, {main_process_ip}, {main_process_port},
{trl_accelerate_configs}) are filled on the node (launcher/plan/placeholders.py). The job folder is no
argument: it reaches every process of the job as LAUNCHER_JOB_DIR only.
"""

from __future__ import annotations

import os

from launcher.config.derive import trainer_processes
from launcher.config.schema import LaunchConfig, ServerEntrypoint, Strategy
from launcher.plan.user_code import USER_SCRIPT, frozen_name
from launcher.plan.placeholders import (HOST, MACHINE_RANK, MAIN_PROCESS_IP, MAIN_PROCESS_PORT, PORT,
                                        TRL_ACCELERATE_CONFIGS, marker)

# trainer.strategy -> TRL's packaged accelerate config (trl/accelerate_configs/<name>.yaml)
ACCELERATE_CONFIGS = {"ddp": "multi_gpu", "zero2": "zero2", "zero3": "zero3", "fsdp2": "fsdp2"}


# what TRL's `trl vllm-serve` imposes on `vllm serve` (trl/scripts/vllm_serve.py build_command, TRL 1.16):
# its defaults for the flags the launcher has no key for, then the trainer-facing settings; tests pin it
TRL_DEFAULTS = ["--dtype", "auto", "--kv-cache-dtype", "auto", "--model-impl", "vllm", "--uvicorn-log-level", "info"]
SCALE_OUT = "--enable-scale-out"  # vLLM >= 0.30 only: launcher.components.serve drops it on an older vLLM
TRL_IMPOSED = ["--weight-transfer-config", '{"backend": "nccl"}', "--logprobs-mode", "processed_logprobs",
               "--max-logprobs", "-1"]
DEV_MODE_ENV = {"VLLM_SERVER_DEV_MODE": "1"}  # TRL sets it: the weight-transfer endpoints live behind it


def serve_command(cfg: LaunchConfig) -> list[str]:
    """The server's command with the plan's TP/DP; the wrapper fills {host} and {port} on the node."""
    if ServerEntrypoint(cfg.server.entrypoint) is ServerEntrypoint.vllm:
        return vllm_serve_command(cfg)
    s, m = cfg.server, cfg.model
    argv = ["trl", "vllm-serve", "--model", m.name_or_path]
    if m.revision:
        argv += ["--revision", m.revision]
    argv += ["--tensor_parallel_size", str(s.tensor_parallel_size),
             "--data_parallel_size", str(s.data_parallel_size),
             "--gpu_memory_utilization", str(s.gpu_memory_utilization)]
    if s.max_model_len is not None:
        argv += ["--max_model_len", str(s.max_model_len)]
    if s.enforce_eager:
        argv += ["--enforce_eager", "true"]
    if m.trust_remote_code:
        argv += ["--trust_remote_code", "true"]
    if s.distributed_executor_backend:
        argv += ["--distributed_executor_backend", s.distributed_executor_backend]
    argv += [str(a) for a in s.extra_args]
    return argv + ["--host", marker(HOST), "--port", marker(PORT)]


def vllm_serve_command(cfg: LaunchConfig) -> list[str]:
    """`vllm serve` exactly as TRL's wrapper would exec it for the same settings (flag order included)."""
    s, m = cfg.server, cfg.model
    argv = ["vllm", "serve", m.name_or_path, "--host", marker(HOST), "--port", marker(PORT),
            "--tensor-parallel-size", str(s.tensor_parallel_size), "--data-parallel-size", str(s.data_parallel_size),
            "--gpu-memory-utilization", str(s.gpu_memory_utilization), *TRL_DEFAULTS]
    if m.revision:
        argv += ["--revision", m.revision]
    if s.max_model_len is not None:
        argv += ["--max-model-len", str(s.max_model_len)]
    if s.enforce_eager:
        argv += ["--enforce-eager"]
    if m.trust_remote_code:
        argv += ["--trust-remote-code"]
    if s.distributed_executor_backend:
        argv += ["--distributed-executor-backend", s.distributed_executor_backend]
    return argv + [SCALE_OUT, *TRL_IMPOSED] + [str(a) for a in s.extra_args]


def train_command(cfg: LaunchConfig, python: str) -> list[str]:
    """The trainer under `accelerate launch` with TRL's packaged config for trainer.strategy."""
    t = cfg.trainer
    processes = trainer_processes(cfg)
    strategy = ACCELERATE_CONFIGS[Strategy(t.strategy).value]
    if strategy == "multi_gpu" and processes == 1:
        strategy = "single_gpu"
    argv = [python, "-m", "accelerate.commands.launch",
            "--config_file", f"{marker(TRL_ACCELERATE_CONFIGS)}/{strategy}.yaml",
            "--num_machines", str(t.nodes), "--num_processes", str(processes),
            "--machine_rank", marker(MACHINE_RANK),
            "--main_process_ip", marker(MAIN_PROCESS_IP), "--main_process_port", marker(MAIN_PROCESS_PORT)]
    argv += [str(a) for a in t.extra_args]
    if t.script is None:
        return argv + ["-m", "launcher.train"]
    # your script, as frozen into <job>/code at submission (launcher.jobfolder.frozen_code): the job runs the copy
    return argv + ["-m", USER_SCRIPT, frozen_name(t.script, os.getcwd()), *[str(a) for a in t.script_args]]


def preflight_command(python: str) -> list[str]:
    """Check the server, generate and score a few prompts, no training (trainer.preflight)."""
    return [python, "-u", "-m", "launcher.train", "--preflight"]


def server_step(python: str) -> list[str]:
    """What the server component's step runs on each node: the wrapper that execs serve_command."""
    return [python, "-u", "-m", "launcher.components.serve"]


def trainer_step(python: str) -> list[str]:
    """What the trainer component's step runs on each node: the wrapper that execs the trainer command."""
    return [python, "-u", "-m", "launcher.components.trainer_step"]
