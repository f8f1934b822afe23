"""The end-of-sweep table (point -> job id or why not -> job folder), and what it and the jobs CLI share:
the states of every job of a sweep read in one sacct call, and the labels that show only what differs."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Optional

from launcher.sweep.manifest import (DRY_RUN, ERROR, LOCAL, REJECTED, SUBMIT_FAILED, SUBMITTED, Manifest,
                                     record_states)


def refresh_states(sweep_dir: Path, manifest: Optional[Manifest] = None, just_queued: bool = False) -> list[dict]:
    """Every job's state, read at once and written into the manifest: one sacct call (plus one squeue for the
    jobs sacct does not list yet). `just_queued` (the end of a sweep): squeue first, since slurmctld holds
    every job that just went in while sacct lags, and sacct only for what squeue no longer lists."""
    from launcher.slurm.states import query_states, state_of

    manifest = manifest or Manifest(sweep_dir)
    points = manifest.read()
    ids = [p["job_id"] for p in points if p.get("job_id")]
    if not ids:
        return points
    try:
        info = _queue_first(ids) if just_queued else query_states(ids, timeout_s=20)
    except Exception:  # sacct or squeue missing or slow: the table shows what was recorded
        return points
    states = {job: state_of(info.get(job)) for job in ids if job in info}
    record_states(sweep_dir, states, manifest)
    return manifest.read()


def _queue_first(ids: list[str]) -> dict[str, dict[str, str]]:
    import subprocess

    from launcher.slurm.states import parse_squeue, query_states

    out = subprocess.run(["squeue", "-h", "-o", "%i|%T", "-j", ",".join(ids)], capture_output=True, text=True,
                         timeout=20)
    info = {job: {"JobID": job, "State": state} for job, state in parse_squeue(out.stdout).items()} \
        if out.returncode == 0 else {}
    missing = [job for job in ids if job not in info]
    if missing:
        info.update(query_states(missing, timeout_s=20))
    return info


def varying(points: list[dict]) -> tuple[list[str], set[str]]:
    """(overrides common to all points, keys whose values differ between points)."""
    if not points:
        return [], set()
    common = set(points[0]["overrides"])
    for p in points[1:]:
        common &= set(p["overrides"])
    keys = {o.split("=", 1)[0] for p in points for o in p["overrides"] if o not in common}
    return [o for o in points[0]["overrides"] if o in common], keys


def point_label(point: dict, common: list[str]) -> str:
    own = [o for o in point["overrides"] if o not in common]
    return " ".join(own) if own else "(no override)"


def shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def last_line(text: Optional[str]) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def sbatch_failure(reason: str) -> str:
    """"sbatch failed (permanent): sbatch: error: Batch job submission failed: X" -> "sbatch failed (permanent): X"."""
    kind = re.match(r"sbatch failed \(([^)]*)\)", reason)
    message = re.sub(r"^sbatch failed \([^)]*\): ", "", last_line(reason))
    message = re.sub(r"^sbatch: error: (Batch job submission failed: )?", "", message)
    return f"sbatch failed ({kind.group(1)}): {message}" if kind else f"sbatch failed: {message}"


def job_cell(point: dict) -> str:
    """The table's `job` column: the job id, or why there is none."""
    status = point.get("status")
    if status == SUBMITTED:
        return str(point["job_id"])
    if status == REJECTED:
        return "rejected: " + shorten(point.get("reason") or "", 70)
    if status == SUBMIT_FAILED:
        return sbatch_failure(point.get("reason") or "")
    if status == DRY_RUN:
        return "dry run"
    if status == ERROR:
        return "error: " + shorten(point.get("reason") or "", 100)
    if status == LOCAL:
        return point.get("reason") or "ran on this machine"
    return "not submitted"


def end_rows(points: list[dict]) -> list[list[str]]:
    common, _ = varying(points)
    return [[str(p["index"]), point_label(p, common), job_cell(p), p.get("job_dir") or ""] for p in points]


def print_end_table(sweep_dir: Path, points: list[dict], stream=None) -> None:
    """The invalid points with every reason, then one row per point; the title has what all points share."""
    from launcher.show.tables import print_table

    stream = stream or sys.stdout
    common, _ = varying(points)
    rejected = [p for p in points if p.get("status") == REJECTED]
    if rejected:
        print(f"\n{len(rejected)} invalid point(s), not submitted:", file=stream)
        for p in rejected:
            problems = p.get("problems") or [{"keys": [], "message": p.get("reason")}]
            why = "; ".join(f"{', '.join(q['keys'])}: {q['message']}" if q["keys"] else q["message"] for q in problems)
            print(f"  #{p['index']} {point_label(p, common)} -> {why}", file=stream)
    went_in = sum(1 for p in points if p.get("status") == SUBMITTED)
    title = f"sweep {sweep_dir}: {went_in} of {len(points)} points queued"
    if common:
        title += f"; every point: {' '.join(common)}"
    print_table(["#", "point", "job", "job folder"], end_rows(points), title=title, stream=stream)
