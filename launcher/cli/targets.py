"""What a jobs-CLI TARGET names: a sweep folder (manifest.jsonl), a job folder, or a Slurm job id."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from launcher.jobfolder import names
from launcher.jobfolder.jsonio import read_json
from launcher.sweep.manifest import MANIFEST, SUBMITTED, SWEEP_FILE, Manifest, sweep_of_job

EXIT_USAGE = 2


class UsageError(Exception):
    pass


@dataclass
class Target:
    sweep_dir: Optional[Path]  # None for a job outside any sweep
    points: list[dict] = field(default_factory=list)  # manifest points (a stand-in point for a lone job)

    @property
    def jobs(self) -> list[str]:
        return [p["job_id"] for p in self.points if p.get("job_id")]


def job_root_default() -> Path:
    return Path(os.environ.get("LAUNCHER_JOB_ROOT", "jobs"))


def resolve(text: str, root: Optional[Path] = None, points: Optional[list[int]] = None) -> Target:
    path = Path(text).expanduser()
    if path.is_dir():
        target = _from_folder(path.resolve())
    elif re.fullmatch(r"\d+", text):
        target = _from_job_id(text, root or job_root_default())
    else:
        raise UsageError(f"{text}: not a sweep folder, a job folder or a job id")
    if points:
        known = {p["index"] for p in target.points}
        unknown = sorted(set(points) - known)
        if unknown:
            raise UsageError(f"no point {', '.join(map(str, unknown))} in {target.sweep_dir or text} "
                             f"(points: {', '.join(str(i) for i in sorted(known))})")
        target.points = [p for p in target.points if p["index"] in points]
    return target


def _from_folder(path: Path) -> Target:
    if (path / MANIFEST).exists() or (path / SWEEP_FILE).exists():
        return Target(path, Manifest(path).read())
    if (path / names.PLAN).exists() or (path / names.SUBMISSION).exists():
        return _from_job_dir(path)
    raise UsageError(f"{path}: neither a sweep folder (no {MANIFEST}) nor a job folder (no plan.json)")


def _from_job_dir(job_dir: Path, job_id: Optional[str] = None) -> Target:
    info = sweep_of_job(job_dir)
    if info and (Path(info["sweep_dir"]) / MANIFEST).exists():
        sweep_dir = Path(info["sweep_dir"])
        everything = Manifest(sweep_dir).read()
        mine = [p for p in everything if p.get("job_dir") == str(job_dir)
                or any(h.get("job_dir") == str(job_dir) for h in p.get("history", []))]
        if mine:
            return Target(sweep_dir, mine)
    submission = read_json(job_dir / names.SUBMISSION) or {}
    point = {"index": 0, "overrides": [a for a in submission.get("argv", [])[1:]], "status": SUBMITTED,
             "job_id": job_id or submission.get("job_id"), "job_dir": str(job_dir), "history": [],
             "submitted_at": submission.get("submitted_at")}
    return Target(None, [point])


def _from_job_id(job_id: str, root: Path) -> Target:
    job_dir = job_dir_of(job_id, root)
    if job_dir is not None:
        target = _from_job_dir(job_dir, job_id)
        if target.sweep_dir is not None:
            return target
        target.points[0]["job_id"] = job_id
        return target
    return Target(None, [{"index": 0, "overrides": [], "status": SUBMITTED, "job_id": job_id, "job_dir": None,
                          "history": []}])


def job_dir_of(job_id: str, root: Path) -> Optional[Path]:
    """The job folder of a job id: slurmctld's StdOut path while it knows the job, else a search of root."""
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30)
        match = re.search(r"\bStdOut=(\S+)", out.stdout)
        if match and (Path(match.group(1)).parent / names.PLAN).exists():
            return Path(match.group(1)).parent
    except (OSError, subprocess.TimeoutExpired):
        pass
    for manifest in sorted(root.glob(f"sweeps/*/{MANIFEST}")):
        for point in Manifest(manifest.parent).read():
            for job in [point] + point.get("history", []):
                if job.get("job_id") == job_id and job.get("job_dir"):
                    return Path(job["job_dir"])
    for submission in root.glob(f"*/*/{names.SUBMISSION}"):
        if (read_json(submission) or {}).get("job_id") == job_id:
            return submission.parent
    return None
