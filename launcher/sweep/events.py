"""What one point of a sweep tells the sweep: the events object passed as `launch(cfg, events=...)`.

launch() and the Slurm backend call these instead of exiting or printing the end of a single launch;
each records the point in the manifest at once, so the manifest always says what went in:

  skip()                       a resumed sweep: True for a point that is not to be submitted again
  facts(cfg)                   what sinfo and the job's Python say, read once for all points with the same
                               cluster settings instead of once per point
  git_snapshot()               the working tree's commit and diff, taken once per sweep
  on_rejected(cfg, error)      an invalid point: recorded with its reasons, nothing submitted
  on_submitting(cfg, plan)     before sbatch: the point's job folder is created and recorded (returned)
  on_submitted(cfg, id, dir)   after sbatch: the job id that went in
  on_submit_failed(cfg, err)   sbatch failed for good: recorded, and the sweep stops after this point
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

from launcher.sweep.manifest import POINT_FILE, REJECTED, SUBMIT_FAILED, SUBMITTED, SUBMITTING, now_iso, retire_job
from launcher.sweep.table import shorten

EXIT_SUBMIT_FAILED = 1


def say(message: str, stream=None) -> None:
    try:
        print(f"launcher: {message}", file=stream or sys.stderr, flush=True)
    except OSError:  # the terminal is gone (SIGHUP): the manifest is the record
        pass


class PointEvents:
    """The events of point `index` (with `overrides`) of the sweep `run` (a launcher.sweep.run.SweepRun: it
    owns the manifest, the counters and what is read once per sweep)."""

    def __init__(self, run: Any, index: int, overrides: list[str]):
        self.run = run
        self.index = index
        self.overrides = list(overrides)

    def edit(self):
        """This point's row, to change; recorded as one line of the manifest's journal (launcher.sweep.journal)."""
        return self.run.manifest.edit_point(self.index, self.overrides)

    def point(self) -> Optional[dict]:
        manifest = self.run.manifest
        return manifest.find(manifest.current(), self.overrides)

    # ----------------------------------------------------------------------------- launch()

    def skip(self) -> bool:
        from launcher.sweep.resume import skip

        leave, message = skip(self.run.mode, self.point())
        if message:
            say(message)
        return leave

    def facts(self, cfg):
        return self.run.facts(cfg)

    def git_snapshot(self) -> tuple[str, str]:
        return self.run.git_snapshot()

    def on_rejected(self, cfg, error) -> None:
        problems = [{"keys": list(p.keys), "message": p.message} for p in getattr(error, "problems", [])]
        reason = "; ".join(p["message"] for p in problems) or str(error)
        with self.edit() as point:
            if point.get("job_id"):
                retire_job(point)
            point.update(status=REJECTED, reason=reason, problems=problems, resubmit=False)
        self.run.rejected += 1
        say(f"point #{self.index} is invalid, not submitted: {shorten(reason, 100)}")

    # ----------------------------------------------------------------------------- the Slurm backend

    def on_submitting(self, cfg, plan) -> Path:
        from launcher.jobfolder.layout import create_job_dir, write_private

        job_dir = create_job_dir(cfg.cluster.job_root, plan.name)
        # the folder is new: created once, as the snapshot's files are (a temp file renamed would cost more)
        write_private(job_dir / POINT_FILE, json.dumps({"sweep_dir": str(self.run.dir), "index": self.index,
                                                        "overrides": self.overrides}, indent=2) + "\n")
        # in place before sbatch runs, so a killed sweep cannot hide a queued job; not fsynced (docs/sweeps.md)
        with self.edit() as point:
            retire_job(point)
            point.update(status=SUBMITTING, job_dir=str(job_dir), submitting_at=now_iso())
        return job_dir

    def on_submitted(self, cfg, job_id: str, job_dir) -> None:
        stamp = now_iso()
        with self.edit() as point:
            if point.get("job_id") and point.get("job_id") != str(job_id):
                retire_job(point)
            point.update(status=SUBMITTED, job_id=str(job_id), job_dir=str(job_dir), submitted_at=stamp,
                         state="SUBMITTED", state_at=stamp, reason=None, resubmit=False)
        self.run.submitted += 1

    def on_submit_failed(self, cfg, error: Exception) -> None:
        with self.edit() as point:
            point.update(status=SUBMIT_FAILED, reason=str(error), state=None)
        self.run.stop(f"sbatch failed for point #{self.index}: {error}", EXIT_SUBMIT_FAILED)
