"""Composed config -> Plan: a pure, validated, printable description of the job.

No I/O here beyond what validation reads (a local model's config.json, local paths), and no heavy
imports. The in-job parts (supervisor, server wrapper, trainer step) read the same Plan back from
plan.json in the job folder, so what the dry-run prints is what runs.

Commands may hold placeholders that only the job can fill: {job_dir}, {attempt_dir}, {host},
{port}, {machine_rank}, {main_process_ip}, {main_process_port}, {trl_accelerate_configs}.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from launcher.validate.rules import Facts, InvalidConfig, Problem, local_gpu_sets, trainer_processes, validate
from launcher.walltime import parse_walltime

# trainer.strategy -> TRL's packaged accelerate config (trl/accelerate_configs/<name>.yaml)
ACCELERATE_CONFIGS = {"ddp": "multi_gpu", "zero2": "zero2", "zero3": "zero3", "fsdp2": "fsdp2"}


@dataclass(frozen=True)
class Component:
    name: str  # "server" | "trainer"
    het_group: Optional[int]  # Slurm het group; None in a plain (colocate) job
    nodes: int
    gpus_per_node: int
    sbatch: dict[str, Any]  # this component's #SBATCH flags, in order
    env: dict[str, str]  # exported into this component's steps
    step: list[str]  # what the step runs on each node (the launcher's own wrapper)
    execs: list[str]  # what that wrapper execs (placeholders filled in the job)
    gpus: Optional[list[int]] = None  # local backend: CUDA_VISIBLE_DEVICES


@dataclass(frozen=True)
class Policies:
    startup_timeout_s: float
    health_grace_s: float
    watchdog_timeout_s: float
    checkpoint_timeout_s: float
    stop_grace_s: float
    signal_before_end_s: int
    max_requeues: int
    server_port: Optional[int]  # None: a free port picked on the server node
    server_host: Optional[str]  # None: the node's cluster address
    group_port: Optional[int]  # None: a free port picked by the trainer's rank 0
    main_process_port: Optional[int]  # None: derived from the job id


@dataclass(frozen=True)
class Plan:
    name: str
    backend: str  # "slurm" | "local"
    mode: str  # "server" | "colocate"
    device: str  # "auto" | "cuda" | "cpu"
    walltime_s: int
    python: str
    components: list[Component]
    job_sbatch: dict[str, Any]  # job-wide flags, rendered in component 0's block
    setup: list[str]  # shell lines before each component (module load, venv activation)
    env: dict[str, str]  # exported into every component
    secret_env: list[str]  # names passed through from the submitting environment, values never written
    grpo: dict[str, Any]  # GRPOConfig kwargs (launcher-owned ones filled in the job)
    preflight: bool
    policies: Policies
    warnings: list[str] = field(default_factory=list)

    def component(self, name: str) -> Optional[Component]:
        return next((c for c in self.components if c.name == name), None)

    @property
    def heterogeneous(self) -> bool:
        return len(self.components) > 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        data = json.loads(text)
        data["components"] = [Component(**c) for c in data["components"]]
        data["policies"] = Policies(**data["policies"])
        return cls(**data)

    def __str__(self) -> str:
        return render_plan(self)


def _sbatch_common(cluster: dict) -> dict[str, Any]:
    flags: dict[str, Any] = {"time": cluster["time"]}
    for key in ("partition", "account", "qos", "constraint"):
        if cluster[key] is not None:
            flags[key] = cluster[key]
    return flags


def _component_sbatch(cfg: dict, comp: dict, uses_gpus: bool) -> dict[str, Any]:
    flags = _sbatch_common(cfg["cluster"])
    flags["nodes"] = comp["nodes"]
    flags["ntasks-per-node"] = 1
    if uses_gpus:
        flags["gpus-per-node"] = comp["gpus_per_node"]
    for key, value in {**cfg["cluster"]["sbatch"], **comp["sbatch"]}.items():
        flags[str(key).lstrip("-")] = value
    return flags


def serve_command(cfg: dict) -> list[str]:
    """`trl vllm-serve` with the plan's TP/DP; the wrapper fills {host} and {port} on the node."""
    s, m = cfg["server"], cfg["model"]
    argv = ["trl", "vllm-serve", "--model", m["name_or_path"]]
    if m["revision"]:
        argv += ["--revision", m["revision"]]
    argv += ["--tensor_parallel_size", str(s["tensor_parallel_size"]),
             "--data_parallel_size", str(s["data_parallel_size"]),
             "--gpu_memory_utilization", str(s["gpu_memory_utilization"])]
    if s["max_model_len"] is not None:
        argv += ["--max_model_len", str(s["max_model_len"])]
    if s["enforce_eager"]:
        argv += ["--enforce_eager", "true"]
    if m["trust_remote_code"]:
        argv += ["--trust_remote_code", "true"]
    if s["distributed_executor_backend"]:
        argv += ["--distributed_executor_backend", s["distributed_executor_backend"]]
    argv += [str(a) for a in s["extra_args"]]
    return argv + ["--host", "{host}", "--port", "{port}"]


def train_command(cfg: dict, python: str) -> list[str]:
    """The trainer under `accelerate launch` with TRL's packaged config for trainer.strategy."""
    t = cfg["trainer"]
    processes = trainer_processes(cfg)
    strategy = ACCELERATE_CONFIGS[t["strategy"]]
    if strategy == "multi_gpu" and processes == 1:
        strategy = "single_gpu"
    argv = [python, "-m", "accelerate.commands.launch",
            "--config_file", f"{{trl_accelerate_configs}}/{strategy}.yaml",
            "--num_machines", str(t["nodes"]), "--num_processes", str(processes),
            "--machine_rank", "{machine_rank}",
            "--main_process_ip", "{main_process_ip}", "--main_process_port", "{main_process_port}"]
    argv += [str(a) for a in t["extra_args"]]
    return argv + ["-m", "launcher.train", "{job_dir}"]


def preflight_command(python: str) -> list[str]:
    return [python, "-u", "-m", "launcher.train", "{job_dir}", "--preflight"]


def build_plan(cfg: dict, facts: Facts = Facts(), python: str = "python3") -> Plan:
    """Validate a composed config (plain dict) and turn it into a Plan; InvalidConfig on errors."""
    problems = validate(cfg, facts)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise InvalidConfig(errors)
    warnings = [str(p) for p in problems if p.severity == "warning"]

    cluster, server, trainer = cfg["cluster"], cfg["server"], cfg["trainer"]
    python = cluster["python"] or python
    uses_gpus = cfg["device"] != "cpu"
    local = cluster["backend"] == "local"
    server_gpus, trainer_gpus = local_gpu_sets(cfg) if local else (None, None)
    server_mode = cfg["mode"] == "server"

    preflight = bool(trainer["preflight"])
    trainer_execs = preflight_command(python) if preflight else train_command(cfg, python)
    components = []
    if server_mode:
        components.append(Component(
            name="server", het_group=0, nodes=server["nodes"], gpus_per_node=server["gpus_per_node"],
            sbatch=_component_sbatch(cfg, server, uses_gpus), env=dict(server["env"]),
            step=[python, "-u", "-m", "launcher.components.serve"], execs=serve_command(cfg), gpus=server_gpus))
    components.append(Component(
        name="trainer", het_group=1 if server_mode else None, nodes=trainer["nodes"],
        gpus_per_node=trainer["gpus_per_node"], sbatch=_component_sbatch(cfg, trainer, uses_gpus),
        env=dict(trainer["env"]), step=[python, "-u", "-m", "launcher.components.trainer_step"],
        execs=trainer_execs, gpus=trainer_gpus))

    job_sbatch: dict[str, Any] = {
        "job-name": cfg["name"],
        "output": "{job_dir}/slurm-%j.out",
        "open-mode": "append",
        # B: so the batch shell (the supervisor, exec'd) gets USR2 itself, not only the steps
        "signal": f"B:USR2@{cluster['signal_before_end_s']}",
    }
    job_sbatch["requeue" if cluster["max_requeues"] > 0 else "no-requeue"] = True

    grpo = {k: v for k, v in cfg["grpo"].items()}
    grpo["use_vllm"] = bool(trainer["use_vllm"])
    if trainer["use_vllm"]:
        grpo["vllm_mode"] = cfg["mode"]
    if cfg["reward"]["weights"] is not None:
        grpo["reward_weights"] = list(cfg["reward"]["weights"])
    if grpo.get("output_dir") is None:
        grpo["output_dir"] = "{job_dir}/output"

    return Plan(
        name=cfg["name"], backend=cluster["backend"], mode=cfg["mode"], device=cfg["device"],
        walltime_s=parse_walltime(cluster["time"]), python=python, components=components,
        job_sbatch=job_sbatch, setup=list(cluster["setup"]), env=dict(cluster["env"]),
        secret_env=list(cluster["secret_env"]), grpo=grpo, preflight=preflight,
        policies=Policies(
            startup_timeout_s=server["startup_timeout_s"], health_grace_s=server["health_grace_s"],
            watchdog_timeout_s=trainer["watchdog_timeout_s"],
            checkpoint_timeout_s=cluster["checkpoint_timeout_s"], stop_grace_s=cluster["stop_grace_s"],
            signal_before_end_s=cluster["signal_before_end_s"], max_requeues=cluster["max_requeues"],
            server_port=server["port"], server_host=server["host"], group_port=trainer["group_port"],
            main_process_port=trainer["main_process_port"]),
        warnings=warnings)


def render_plan(plan: Plan) -> str:
    """The plan as people read it."""
    lines = [f"Plan: {plan.name}  ({plan.backend} backend, {plan.mode} mode, device {plan.device}, "
             f"walltime {plan.walltime_s // 3600}h{plan.walltime_s % 3600 // 60:02d}m)"]
    for c in plan.components:
        where = f"het group {c.het_group}" if c.het_group is not None else "job"
        gpus = f", GPUs {c.gpus}" if c.gpus is not None else ""
        lines.append(f"  {c.name:<8} {where}: {c.nodes} node(s) x {c.gpus_per_node} GPU(s){gpus}")
        lines.append(f"           runs: {shlex.join(c.execs)}")
        if c.env:
            lines.append(f"           env:  {' '.join(f'{k}={shlex.quote(str(v))}' for k, v in c.env.items())}")
    p = plan.policies
    lines.append("  policies: "
                 f"server health within {p.startup_timeout_s:g} s (dead after {p.health_grace_s:g} s silent), "
                 f"trainer watchdog {p.watchdog_timeout_s:g} s, checkpoint {p.checkpoint_timeout_s:g} s, "
                 f"stop grace {p.stop_grace_s:g} s")
    lines.append(f"            USR2 {p.signal_before_end_s} s before walltime; max requeues {p.max_requeues}; "
                 f"server port {p.server_port or 'free port on the node'}; "
                 f"bind {p.server_host or 'node cluster address'}; "
                 f"weight-sync port {p.group_port or 'free port on trainer rank 0'}")
    grpo = " ".join(f"{k}={v}" for k, v in plan.grpo.items())
    lines.append(f"  grpo: {grpo}")
    if plan.preflight:
        lines.append("  trainer: preflight only (check server, generate, score; no training)")
    if plan.secret_env:
        lines.append(f"  secrets from your environment (never written): {', '.join(plan.secret_env)}")
    for w in plan.warnings:
        lines.append(f"  warning: {w}")
    return "\n".join(lines)


__all__ = ["ACCELERATE_CONFIGS", "Component", "InvalidConfig", "Plan", "Policies", "Problem", "build_plan",
           "render_plan", "serve_command", "train_command"]
