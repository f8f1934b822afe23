"""The plan as people read it (plan.txt, the dry-run's first part). Reads a Plan's fields only."""

from __future__ import annotations

import shlex
from typing import Any

from launcher.paths import looks_local
from launcher.plan.containers import describe as describe_container
from launcher.plan.containers import shared_folders, wrap
from launcher.plan.user_code import CODE_DIR, user_script_of


def _where(name: str) -> str:
    return "local" if looks_local(name) else "hub"


def lora_lines(lora: Any) -> list[str]:
    """LoRA, when model.lora.rank is set: with what, and what reaches the server and the checkpoints."""
    if lora is None:
        return []
    targets = lora.target_modules
    named = ("peft's default for the architecture" if targets is None else
             targets if isinstance(targets, str) else ", ".join(targets))
    saved = f", modules_to_save {', '.join(lora.modules_to_save)}" if lora.modules_to_save else ""
    return [f"  lora:    on: rank {lora.rank}, alpha {lora.alpha:g}, dropout {lora.dropout:g}, target modules "
            f"{named}{saved}",
            "           the server gets the merged weights at every sync; checkpoints and the output hold the adapter"]


def what_is_trained(plan: Any) -> list[str]:
    """What is trained on what: the model and its revision, the dataset and its split, the rewards with weights."""
    m, d, r = plan.model, plan.data, plan.reward
    model = f"  model:   {m.name_or_path} ({_where(m.name_or_path)}"
    if not looks_local(m.name_or_path):
        model += f", revision {m.revision}" if m.revision else ", revision: the latest on main"
    model += ", trust_remote_code)" if m.trust_remote_code else ")"
    if d.name_or_path is None:
        data = "  data:    none given (your script loads its own)"
    else:
        data = f"  data:    {d.name_or_path} ({_where(d.name_or_path)}), split {d.split}"
        if d.revision and not looks_local(d.name_or_path):
            data += f", revision {d.revision}"
        if d.config_name:
            data += f", config {d.config_name}"
        data += f", first {d.max_samples} rows" if d.max_samples is not None else ", all rows"
    weights = r.weights if r.weights is not None else [1.0] * len(r.funcs)
    rewards = ", ".join(f"{f} x {w:g}" for f, w in zip(r.funcs, weights))
    note = "" if r.weights is not None else " (TRL's default weights)"
    lines = [model, *lora_lines(m.lora), data, f"  rewards: {rewards}{note}"]
    if plan.offline:
        lines.append(f"  offline: hub repos staged into {plan.hf_home} at submission (what is there is skipped); "
                     "the job runs with HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1")
    if plan.env:
        lines.append(f"  env (every component): {' '.join(f'{k}={shlex.quote(str(v))}' for k, v in plan.env.items())}")
    return lines


def user_script_lines(plan: Any) -> list[str]:
    """What trainer.script runs with, and what the script's own values override."""
    trainer = plan.component("trainer")
    script = user_script_of(list(trainer.execs)) if trainer is not None else None
    if not script:
        return []
    args = f" {shlex.join(script[1:])}" if script[1:] else ""
    return [f"  trainer: your script {script[0]}{args}; server URL, group port, callback and output_dir given by the "
            "launcher unless the script sets them",
            "           the grpo keys above fill only the GRPOConfig fields your script leaves unset; data and "
            "rewards above are not used (the script loads its own)",
            f"           frozen at submission: {script[0]} and the files it imports from the launch directory are "
            f"copied to <job folder>/{CODE_DIR}/ and run from there"]


def tracking_lines(plan) -> list[str]:
    """What the job logs to; one run per job, every attempt continuing it (launcher.jobfolder.tracking)."""
    t = getattr(plan, "tracking", None)
    if t is None:
        return []
    where = []
    if t.wandb:
        named = ", ".join(f"{k} {v}" for k, v in (("project", t.project), ("entity", t.entity), ("group", t.group),
                                                  ("mode", t.wandb_mode)) if v)
        where.append(f"W&B ({named or 'names from the launch'}) under <job>/wandb")
    if t.tensorboard:
        where.append("TensorBoard in <job>/tensorboard")
    return [f"  tracking: {'; '.join(where)}: one run per job, continued by every attempt (tracking.json)"]


def render_plan(plan: Any) -> str:
    """The plan as people read it (`plan` is a launcher.plan.plan.Plan)."""
    lines = [f"Plan: {plan.name}  ({plan.backend} backend, {plan.mode} mode, device {plan.device}, "
             f"walltime {plan.walltime_s // 3600}h{plan.walltime_s % 3600 // 60:02d}m)"]
    lines += what_is_trained(plan)
    for c in plan.components:
        where = f"het group {c.het_group}" if c.het_group is not None else "job"
        gpus = f", GPUs {c.gpus}" if c.gpus is not None else ""
        lines.append(f"  {c.name:<8} {where}: {c.nodes} node(s) x {c.gpus_per_node} GPU(s){gpus}")
        r = getattr(c, "resources", None)
        if r is not None:
            lines.append(f"           asks: CPUs {r.cpus_why}; memory {r.mem_why}")
        lines.append(f"           runs: {shlex.join(c.execs)}")
        container = getattr(c, "container", None)
        lines.append(f"           in:   {describe_container(container)}")
        if container is not None:
            flags, argv = wrap(container, list(c.step), plan.device != "cpu" and c.gpus_per_node > 0,
                               "<job folder>", shared_folders(plan))
            srun = f"srun ... {shlex.join(flags)} " if flags else "srun ... "
            lines.append(f"           step: {srun}{shlex.join(argv)}")
        if c.env:
            lines.append(f"           env:  {' '.join(f'{k}={shlex.quote(str(v))}' for k, v in c.env.items())}")
    p = plan.policies
    interface = getattr(p, "network_interface", None)
    bind = p.server_host or (f"the address of {interface}" if interface else "node cluster address")
    lines.append("  policies: "
                 f"server health within {p.startup_timeout_s:g} s (dead after {p.health_grace_s:g} s silent), "
                 f"trainer watchdog {p.watchdog_timeout_s:g} s, checkpoint {p.checkpoint_timeout_s:g} s, "
                 f"stop grace {p.stop_grace_s:g} s")
    lines.append(f"            USR2 {p.signal_before_end_s} s before walltime; max requeues {p.max_requeues}; "
                 f"server port {p.server_port or 'free port on the node'}; "
                 f"bind {bind}; "
                 f"weight-sync port {p.group_port or 'free port on trainer rank 0'}")
    if plan.mode == "server":
        lines.append("            server protected: every endpoint but GET /health needs this attempt's token "
                     "(environment only)" if getattr(p, "server_token", True)
                     else "            server OPEN: anyone who reaches its address can use it (server.require_token=false)")
    grpo = " ".join(f"{k}={v}" for k, v in plan.grpo.items())
    lines.append(f"  grpo: {grpo}")
    lines += user_script_lines(plan)
    lines += tracking_lines(plan)
    if plan.preflight:
        lines.append("  trainer: preflight only (check server, generate, score; no training)")
    if plan.secret_env:
        lines.append(f"  secrets from your environment (never written): {', '.join(plan.secret_env)}")
    for w in plan.warnings:
        lines.append(f"  warning: {w}")
    return "\n".join(lines)
