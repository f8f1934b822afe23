"""Resuming a sweep: the resume option, which points a rerun submits, and points left `submitting`.

Resume: rerun the same command with `hydra.sweep.dir=<sweep folder> hydra.callbacks.sweep.resume=true`
(`python -m launcher.jobs resume <sweep folder>` does exactly that). Points that already went in
(submitted, with a job id) are skipped; the others (pending, rejected, submit_failed, and a
`submitting` point whose job cannot be found) are validated and submitted. `resume=marked` submits
only the points `jobs resubmit` marked.

The option lives in Hydra's config as the node of `SweepOptions`, a callback that only checks it
(conf/config.yaml, `hydra.callbacks.sweep`): the launcher plugin reads it from the sweep's config.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback

from launcher.jobfolder import names
from launcher.jobfolder.jsonio import read_json
from launcher.sweep.manifest import PENDING, SUBMITTED

NO, MISSING, MARKED = "no", "missing", "marked"
EXIT_BAD_OPTION = 2


def resume_mode(value: Any) -> str:
    """hydra.callbacks.sweep.resume -> "no" | "missing" (submit what did not go in) | "marked"."""
    text = str(value).strip().lower()
    if text in ("", "false", "no", "0", "none", "null"):
        return NO
    if text == MARKED:
        return MARKED
    if text in ("true", "yes", "1", MISSING):
        return MISSING
    raise ValueError(f"hydra.callbacks.sweep.resume must be false, true or marked, got {value!r}")


def resume_mode_of(config) -> str:
    """The resume mode a sweep's Hydra config asks for (false when the node is not there)."""
    from omegaconf import OmegaConf

    return resume_mode(OmegaConf.select(config, "hydra.callbacks.sweep.resume", default=False))


class SweepOptions(Callback):
    """Carries the sweep's options in Hydra's config (`hydra.callbacks.sweep.resume`) and refuses a bad
    value before anything is done; the launcher plugin (hydra_plugins/launcher_sweep) does the sweep."""

    def __init__(self, resume: Any = False) -> None:
        self.resume = resume

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        try:
            resume_mode(self.resume)
        except ValueError as error:
            print(f"launcher: {error}", file=sys.stderr, flush=True)
            sys.exit(EXIT_BAD_OPTION)


def skip(mode: str, point: Optional[dict]) -> tuple[bool, Optional[str]]:
    """Whether a rerun in this mode leaves the point alone, and what to say about it."""
    if mode == NO or (point is not None and point.get("resubmit")):
        return False, None
    if mode == MARKED:
        return True, None  # only the marked points
    if point is not None and point.get("job_id") and point.get("status") == SUBMITTED:
        return True, f"point #{point['index']} already went in as job {point['job_id']}; not submitted again"
    return False, None


def reconcile_submitting(point: dict) -> None:
    """A point left `submitting` by a hard kill: did its sbatch go in? The job folder or squeue says."""
    job_dir = point.get("job_dir")
    info = read_json(Path(job_dir) / names.SUBMISSION) if job_dir else None
    if isinstance(info, dict) and info.get("job_id"):
        point.update(status=SUBMITTED, job_id=str(info["job_id"]), submitted_at=info.get("submitted_at"))
        return
    job_id = find_queued_job(job_dir) if job_dir else None
    if job_id:
        point.update(status=SUBMITTED, job_id=job_id, submitted_at=point.get("submitting_at"))
        return
    point.update(status=PENDING, reason="sbatch was interrupted and no job of this folder is queued")


def find_queued_job(job_dir: str) -> Optional[str]:
    """The queued job whose batch script lies in job_dir (squeue's command column), if any."""
    try:
        out = subprocess.run(["squeue", "-h", "-o", "%i|%o"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.stdout.splitlines():
        job_id, _, command = line.partition("|")
        if command.startswith(str(job_dir).rstrip("/") + "/"):
            return job_id.split("+")[0].strip()
    return None
