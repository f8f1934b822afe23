"""A job as the jobs CLI reports it: its state (het components aggregated), why it ended, its category."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from launcher.jobfolder import names
from launcher.jobfolder.jsonio import read_json
from launcher.jobfolder.layout import latest_attempt
from launcher.jobfolder.logs import root_cause, tail_lines, tail_text
from launcher.jobfolder.records import read_result
from launcher.slurm.states import ACTIVE_STATES, FAILED_STATES, WAITING_STATES, state_of
from launcher.sweep.manifest import REJECTED


def component_names(job_dir: Optional[str]) -> list[str]:
    plan = read_json(Path(job_dir) / names.PLAN) if job_dir else None
    if isinstance(plan, dict):
        return [c["name"] for c in plan.get("components", [])]
    return ["server", "trainer"]


def state_text(info: Optional[dict], job_dir: Optional[str]) -> str:
    """The aggregated state, with the components' own states when they differ."""
    state = state_of(info)
    parts = (info or {}).get("components") or {}
    if isinstance(parts, dict) and len(set(parts.values())) > 1:
        names = component_names(job_dir)
        each = ", ".join(f"{names[int(k)] if int(k) < len(names) else k} {v}" for k, v in sorted(parts.items()))
        return f"{state} ({each})"
    return state


def failure_reason(job_dir: Optional[str]) -> str:
    """Why a job ended: the result.json of its last attempt (a provisional one says so), else what the
    supervisor or the batch step last wrote."""
    if not job_dir:
        return ""
    attempt = latest_attempt(Path(job_dir))
    if attempt is None:
        out = sorted(Path(job_dir).glob("slurm-*.out"))
        tail = tail_lines(out[-1], 1) if out else []
        if not tail:
            return "no attempt folder: the batch step never started"
        return f"{root_cause(tail_text(out[-1])) or tail[0]} (full log: {out[-1]})"
    result = read_result(attempt)
    if result is not None:
        note = " (provisional: the supervisor did not finish deciding)" if result.provisional else ""
        return f"{result.state.value}: {_with_cause(result.reason)}{note}"
    lines = tail_lines(attempt / names.SUPERVISOR_LOG, 1)
    return f"[{attempt.name}] {lines[-1].split(' ', 2)[-1]}" if lines else "the supervisor wrote nothing"


def _with_cause(reason: str) -> str:
    """The reason's first line. Launchers before root causes wrote "...; last lines of server.log:" and the
    tail below it: the tail's root-cause line is added."""
    summary, _, tail = reason.partition("\n")
    if tail and "(full log: " not in summary:
        cause = root_cause(tail)
        if cause:
            return f"{summary} {cause}"
    return summary


def category(point: dict, state: str) -> str:
    status = point.get("status")
    if status == REJECTED:
        return "rejected"
    if not point.get("job_id"):
        return "not submitted"
    if state in WAITING_STATES or state == "SUBMITTED":
        return "pending"
    if state in ACTIVE_STATES:
        return "running"
    if state == "COMPLETED":
        return "completed"
    if state == "CANCELLED":
        return "cancelled"
    if state in FAILED_STATES:
        return "failed"
    return "unknown"
