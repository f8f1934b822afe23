"""Typed config -> Plan: validate, then lay out the components, their #SBATCH flags, env, commands and
policies. No I/O here beyond what validation reads (a local model's config.json, local paths), and no
heavy imports.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Optional, Union

from launcher import hub_cache
from launcher.config.compose import as_launch_config
from launcher.config.derive import local_gpu_sets
from launcher.config.schema import Backend, ClusterConfig, Device, LaunchConfig, Mode, ServerConfig, TrainerConfig
from launcher.plan.containers import container_of
from launcher.plan.commands import DEV_MODE_ENV, preflight_command, serve_command, server_step, train_command, trainer_step
from launcher.plan.placeholders import JOB_DIR, marker
from launcher.plan.plan import Component, DataSpec, LoraSpec, ModelSpec, Plan, Policies, RewardSpec
from launcher.validate.problems import Facts, InvalidConfig
from launcher.validate.resources import ResourceRequest, component_request
from launcher.validate.rules import validate
from launcher.validate.tracking import tracked
from launcher.plan.plan import TrackingSpec
from launcher.validate.sbatch_options import SBATCH_SHORT
from launcher.walltime import parse_walltime


def _sbatch_common(cluster: ClusterConfig) -> dict[str, Any]:
    flags: dict[str, Any] = {"time": cluster.time}
    for key, value in (("partition", cluster.partition), ("account", cluster.account), ("qos", cluster.qos),
                       ("constraint", cluster.constraint)):
        if value is not None:
            flags[key] = value
    return flags


def _component_sbatch(cfg: LaunchConfig, comp: Union[ServerConfig, TrainerConfig], uses_gpus: bool,
                      request: Optional[ResourceRequest]) -> dict[str, Any]:
    flags = _sbatch_common(cfg.cluster)
    flags["nodes"] = comp.nodes
    flags["ntasks-per-node"] = 1
    if uses_gpus:
        flags["gpus-per-node"] = comp.gpus_per_node
    if request is not None:
        flags.update(request.sbatch())
    for key, value in {**cfg.cluster.sbatch, **comp.sbatch}.items():
        bare = str(key).lstrip("-")
        flags[SBATCH_SHORT.get(bare, bare)] = value  # the user's flag wins (in the launcher's place, if it has one)
    return flags


def _grpo(cfg: LaunchConfig) -> dict[str, Any]:
    """GRPOConfig kwargs: the user's, plus the ones the launcher owns (vLLM wiring, reward weights)."""
    grpo = dict(cfg.grpo)
    grpo["use_vllm"] = bool(cfg.trainer.use_vllm)
    if cfg.trainer.use_vllm:
        grpo["vllm_mode"] = Mode(cfg.mode).value
    if cfg.reward.weights is not None:
        grpo["reward_weights"] = list(cfg.reward.weights)
    if grpo.get("output_dir") is None:
        grpo["output_dir"] = f"{marker(JOB_DIR)}/output"
    return grpo


def _server_env(server: ServerConfig) -> dict:
    """server.env, with TRL's VLLM_SERVER_DEV_MODE=1 when the server is `vllm serve` itself (entrypoint=vllm)."""
    dev = DEV_MODE_ENV if str(getattr(server.entrypoint, "value", server.entrypoint)) == "vllm" else {}
    return {**dev, **server.env}


def _data(cfg: LaunchConfig) -> DataSpec:
    d = cfg.data
    mixture = None if not d.mixture else [
        {"name_or_path": m.name_or_path, "split": m.split or d.split, "config_name": m.config_name,
         "revision": m.revision, "weight": float(m.weight)} for m in d.mixture]
    first = mixture[0] if mixture else {}
    seed = d.seed if d.seed is not None else int((cfg.grpo or {}).get("seed", 42))
    return DataSpec(name_or_path=first.get("name_or_path", d.name_or_path), split=first.get("split", d.split),
                    config_name=first.get("config_name", d.config_name), max_samples=d.max_samples,
                    revision=first.get("revision", d.revision), prompt_column=d.prompt_column,
                    prompt_template=d.prompt_template, system_prompt=d.system_prompt,
                    reward_columns=dict(d.reward_columns), mixture=mixture, seed=seed)


def _lora(cfg: LaunchConfig) -> Optional[LoraSpec]:
    """model.lora with alpha's default (2 x rank) filled; None without a rank (full fine-tuning)."""
    lora = cfg.model.lora
    if lora.rank is None:
        return None
    targets = lora.target_modules
    return LoraSpec(rank=int(lora.rank), alpha=float(lora.alpha if lora.alpha is not None else 2 * lora.rank),
                    dropout=float(lora.dropout), target_modules=list(targets) if isinstance(targets, (list, tuple))
                    else targets, modules_to_save=None if lora.modules_to_save is None else list(lora.modules_to_save))


def _tracking(cfg: LaunchConfig) -> Optional[TrackingSpec]:
    """The W&B / TensorBoard run of the job; W&B offline by itself on offline nodes (cluster.offline)."""
    backends = tracked(cfg)
    if not backends:
        return None
    t = cfg.tracking
    mode = t.wandb_mode or ("offline" if cfg.cluster.offline else None)
    return TrackingSpec(backends=backends, project=t.project, entity=t.entity, group=t.group,
                        tags=[str(tag) for tag in t.tags], wandb_mode=mode)


def _policies(cfg: LaunchConfig) -> Policies:
    cluster, server, trainer = cfg.cluster, cfg.server, cfg.trainer
    return Policies(
        startup_timeout_s=server.startup_timeout_s, health_grace_s=server.health_grace_s,
        watchdog_timeout_s=trainer.watchdog_timeout_s,
        checkpoint_timeout_s=cluster.checkpoint_timeout_s, stop_grace_s=cluster.stop_grace_s,
        signal_before_end_s=cluster.signal_before_end_s, max_requeues=cluster.max_requeues,
        server_port=server.port, server_host=server.host, group_port=trainer.group_port,
        main_process_port=trainer.main_process_port,
        requeue_on_node_failure=bool(cluster.requeue_on_node_failure),
        preflight_prompts=int(trainer.preflight_prompts), network_interface=cluster.network_interface,
        server_token=bool(server.require_token), sync_timeout_s=float(trainer.sync_timeout_s))


def _job_env(cfg: LaunchConfig) -> dict[str, str]:
    """cluster.env, after the Hugging Face cache the job reads (and, offline, the offline switches)."""
    cluster = cfg.cluster
    cache = hub_cache.job_env(cluster.hf_home, bool(cluster.offline)) if cluster.hf_home else {}
    return {**cache, **cluster.env}


def build_plan(cfg: Union[LaunchConfig, Mapping], facts: Facts = Facts(), python: str = "python3") -> Plan:
    """Validate a composed config (a LaunchConfig; a plain nested mapping is typed first) and turn it into a
    Plan; InvalidConfig on errors."""
    cfg = as_launch_config(cfg)
    problems = validate(cfg, facts)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise InvalidConfig(errors)
    warnings = [str(p) for p in problems if p.severity == "warning"]

    cluster, server, trainer = cfg.cluster, cfg.server, cfg.trainer
    python = cluster.python or python
    uses_gpus = cfg.device != Device.cpu
    local = cluster.backend == Backend.local
    server_gpus, trainer_gpus = local_gpu_sets(cfg) if local else (None, None)
    server_mode = cfg.mode == Mode.server

    preflight = bool(trainer.preflight)
    job_root = os.path.realpath(os.path.expanduser(str(cluster.job_root)))  # bound into a container at its own path
    trainer_execs = preflight_command(python) if preflight else train_command(cfg, python)
    components = []
    requests = {name: None if local else component_request(cfg, name, facts) for name in ("server", "trainer")}
    if server_mode:
        components.append(Component(
            name="server", het_group=0, nodes=server.nodes, gpus_per_node=server.gpus_per_node,
            sbatch=_component_sbatch(cfg, server, uses_gpus, requests["server"]), env=_server_env(server),
            step=server_step(python), execs=serve_command(cfg), gpus=server_gpus, resources=requests["server"],
            container=container_of(cluster.container, server.container, job_root)))
    components.append(Component(
        name="trainer", het_group=1 if server_mode else None, nodes=trainer.nodes,
        gpus_per_node=trainer.gpus_per_node, sbatch=_component_sbatch(cfg, trainer, uses_gpus, requests["trainer"]),
        env=dict(trainer.env), step=trainer_step(python), execs=trainer_execs, gpus=trainer_gpus,
        resources=requests["trainer"], container=container_of(cluster.container, trainer.container, job_root)))

    job_sbatch: dict[str, Any] = {
        "job-name": cfg.name,
        "output": f"{marker(JOB_DIR)}/slurm-%j.out",
        "open-mode": "append",
        # B: so the batch shell (the supervisor, exec'd) gets USR2 itself, not only the steps
        "signal": f"B:USR2@{cluster.signal_before_end_s}",
    }
    job_sbatch["requeue" if cluster.max_requeues > 0 else "no-requeue"] = True

    return Plan(
        name=cfg.name, backend=Backend(cluster.backend).value, mode=Mode(cfg.mode).value,
        device=Device(cfg.device).value, walltime_s=parse_walltime(cluster.time), python=python,
        components=components, job_sbatch=job_sbatch, setup=list(cluster.setup), env=_job_env(cfg),
        secret_env=list(cluster.secret_env), grpo=_grpo(cfg), preflight=preflight, policies=_policies(cfg),
        model=ModelSpec(name_or_path=cfg.model.name_or_path, revision=cfg.model.revision,
                        trust_remote_code=cfg.model.trust_remote_code, lora=_lora(cfg)),
        data=_data(cfg),
        reward=RewardSpec(funcs=list(cfg.reward.funcs),
                          weights=None if cfg.reward.weights is None else list(cfg.reward.weights),
                          timeout_s=None if cfg.reward.timeout_s is None else float(cfg.reward.timeout_s)),
        warnings=warnings, offline=bool(cluster.offline), hf_home=cluster.hf_home,
        cache_dir=os.path.realpath(os.path.expanduser(cluster.cache_dir)) if cluster.cache_dir
        else os.path.join(job_root, ".cache"), tracking=_tracking(cfg))
