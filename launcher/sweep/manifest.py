"""The sweep's record: manifest.jsonl (one JSON object per point) and the files beside it.

The sweep folder (`hydra.sweep.dir`, default `<job_root>/sweeps/<YYYYmmdd-HHMMSS>`) holds:

  sweep.json      each command line that ran this sweep (argv, cwd, time, mode): `jobs resume` reruns it
  manifest.jsonl  one JSON object per point, rewritten atomically (temp file, fsync, rename) under a lock,
                  so a reader or an interruption never sees half a file: when a sweep starts and ends and
                  when `jobs` changes points. Keys:
                    index         Hydra's job number (the `#` of the tables)
                    overrides     the point's override list (Hydra's hydra.overrides.task): its identity
                    status        a Status (below)
                    reason        why rejected / why sbatch failed (null otherwise); problems: each with keys
                    job_id, job_dir, submitted_at   the job that went in (job_dir is set as `submitting`,
                                  before sbatch runs, so an interrupted sbatch can be traced to its folder)
                    state, state_at   the scheduler state when last read (sweep end, `jobs status`)
                    history       earlier jobs of this point (after `jobs resubmit`), oldest first
                    resubmit      true while `jobs resubmit` has asked for a new job
  manifest.journal.jsonl  while a sweep runs: each change of one point, appended as that point's whole
                  record (launcher.sweep.journal); readers fold it in, the sweep's end folds it into
                  manifest.jsonl and deletes it
  multirun.yaml   Hydra's own copy of the sweep config

Each job folder of the sweep also gets `sweep_point.json` (sweep folder, index, overrides), so a job
folder or job id leads back to its sweep.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import fcntl
import json
import os
from pathlib import Path
from typing import Iterator, Optional, TextIO

from launcher.jobfolder import names
from launcher.jobfolder.jsonio import read_json
from launcher.sweep.journal import FileStamp, Journal, parse_points, point_key, replay, stamp_of

MANIFEST = "manifest.jsonl"
SWEEP_FILE = "sweep.json"
POINT_FILE = names.SWEEP_POINT
LOCK_FILE = ".manifest.lock"  # held while the manifest is read, changed and written back
RUN_LOCK_FILE = ".sweep.lock"  # held by the process running (or resuming) the sweep


class Status(str, enum.Enum):
    """A point's `status` in the manifest (stored as its value)."""

    PENDING = "pending"  # not submitted yet
    SUBMITTING = "submitting"  # its job folder exists and sbatch was running
    SUBMITTED = "submitted"
    REJECTED = "rejected"  # invalid: not submitted, with its reasons
    SUBMIT_FAILED = "submit_failed"  # sbatch failed for good
    DRY_RUN = "dry_run"
    ERROR = "error"  # an exception in the launcher
    LOCAL = "local"  # cluster=local: the point ran here, in turn


# the plain strings, as readers of the manifest compare them
PENDING, SUBMITTING, SUBMITTED = Status.PENDING.value, Status.SUBMITTING.value, Status.SUBMITTED.value
REJECTED, SUBMIT_FAILED, DRY_RUN = Status.REJECTED.value, Status.SUBMIT_FAILED.value, Status.DRY_RUN.value
ERROR, LOCAL = Status.ERROR.value, Status.LOCAL.value

JOB_KEYS = ("job_id", "job_dir", "submitted_at", "state", "state_at")


def now_iso() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


class Manifest:
    """manifest.jsonl of one sweep folder and its journal, under a lock: read both; change one point (a line
    appended to the journal); edit every point (the journal folded in, the whole file rewritten atomically).

    The points this object last wrote are reused as long as both files are as it left them (same inode,
    size and mtime), and a journal line or a rewrite serializes only the points that changed since: a
    sweep neither parses the manifest again nor dumps every point again for each point, and still sees a
    change another process made (`jobs status` writing states)."""

    def __init__(self, sweep_dir: str | os.PathLike):
        self.dir = Path(sweep_dir)
        self.path = self.dir / MANIFEST
        self.journal = Journal(self.dir)
        self._points: Optional[list[dict]] = None  # what this object last wrote
        self._stamp: Optional[tuple[Optional[FileStamp], Optional[FileStamp]]] = None  # (manifest, journal) then
        self._journaled = False  # the journal held records when the lock was taken
        self._lines: dict[int, str] = {}  # id(point) -> its JSON line, for the points of self._points
        self._index: dict[tuple[str, ...], dict] = {}  # point_key -> point, of the list self._indexed
        self._indexed: Optional[list[dict]] = None
        self._lock: Optional[TextIO] = None  # the open LOCK_FILE, kept for this object's edits

    def exists(self) -> bool:
        return self.path.exists()

    def read(self) -> list[dict]:
        """The points as the files have them now (a fresh copy), by index: manifest.jsonl, then its journal.
        Read again when the manifest was replaced meanwhile (a compaction may have deleted the journal
        whose records the manifest read before did not hold yet)."""
        for _ in range(10):
            before = stamp_of(self.path)
            try:
                text = self.path.read_text()
            except OSError:
                text = ""
            records = self.journal.records()
            if stamp_of(self.path) == before:
                break
        return sorted(replay(parse_points(text), records), key=lambda p: p.get("index", 0))

    def current(self) -> list[dict]:
        """The points as this object last wrote them if the files are still as it left them, else as read
        now (to look at, not to change: use edit())."""
        if self._points is not None and self._stamp == self._stamps():
            return self._points
        return self.read()

    @contextlib.contextmanager
    def edit(self, durable: bool = True) -> Iterator[list[dict]]:
        """The points, to change in place; manifest.jsonl rewritten when the block ends without an error (the
        journal folded in first). `durable`: fsync before the rename (an OS crash cannot lose the change)."""
        with self._locked() as points:
            if self._journaled:
                self._fold(points)  # on its own: the change below must not be undone by replaying the journal
            self._lines = {}
            yield points
            self._write(points, durable)

    @contextlib.contextmanager
    def edit_point(self, index: int, overrides: list[str]) -> Iterator[dict]:
        """One point (added if new), to change in place; recorded as one journal line when the block ends
        without an error (not fsynced: docs/sweeps.md says why)."""
        with self._locked() as points:
            point = self.upsert(points, index, overrides)
            yield point
            self._lines[id(point)] = self.journal.append(point)

    def compact(self) -> None:
        """Fold the journal into manifest.jsonl (rewritten atomically, fsynced) and delete it: the end of a
        sweep leaves manifest.jsonl as the whole record."""
        with self._locked() as points:
            if self._journaled:
                self._fold(points)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[dict]]:
        if self._lock is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.dir / LOCK_FILE, "a")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            stamp = self._stamps()
            if self._points is None or self._stamp != stamp:
                self._points, self._lines = self.read(), {}
            self._journaled = stamp[1] is not None
            points, self._points = self._points, None  # an edit that fails leaves nothing cached
            yield points
            self._points, self._stamp = points, self._stamps()
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)

    def find(self, points: list[dict], overrides: list[str]) -> Optional[dict]:
        """find(), through an index of `points` (kept while it is the same list, rebuilt when it grew)."""
        if points is not self._indexed or len(self._index) != len(points):
            self._index = {point_key(p["overrides"]): p for p in points}
            self._indexed = points
        return self._index.get(point_key(overrides))

    def upsert(self, points: list[dict], index: int, overrides: list[str]) -> dict:
        point = self.find(points, overrides)
        if point is None:
            point = new_point(index, overrides)
            points.append(point)
        return point

    def _stamps(self) -> tuple[Optional[FileStamp], Optional[FileStamp]]:
        return stamp_of(self.path), self.journal.stamp()

    def _fold(self, points: list[dict]) -> None:
        """manifest.jsonl := the points (the journal's records in them), fsynced; then the journal goes. A crash
        between the two leaves a journal whose replay over the new manifest changes nothing."""
        self._write(points, durable=True)
        self.journal.remove()
        self._journaled = False

    def _write(self, points: list[dict], durable: bool) -> None:
        points.sort(key=lambda p: p.get("index", 0))
        lines = []
        for point in points:
            line = self._lines.get(id(point))
            if line is None:
                line = self._lines[id(point)] = json.dumps(point) + "\n"
            lines.append(line)
        tmp = self.path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            f.write("".join(lines))
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.path)


def find(points: list[dict], overrides: list[str]) -> Optional[dict]:
    key = point_key(overrides)
    return next((p for p in points if point_key(p["overrides"]) == key), None)


def new_point(index: int, overrides: list[str]) -> dict:
    return {"index": index, "overrides": list(overrides), "status": PENDING, "reason": None, "job_id": None,
            "job_dir": None, "submitted_at": None, "state": None, "state_at": None, "history": []}


def upsert(points: list[dict], index: int, overrides: list[str]) -> dict:
    point = find(points, overrides)
    if point is None:
        point = new_point(index, overrides)
        points.append(point)
    return point


def retire_job(point: dict) -> None:
    """Move the point's current job (if any) into its history, before a new one goes in."""
    if point.get("job_id"):
        point.setdefault("history", []).append({k: point.get(k) for k in JOB_KEYS})
    point.update(job_id=None, job_dir=None, submitted_at=None, state=None, state_at=None, reason=None)


def sweep_of_job(job_dir: str | os.PathLike) -> Optional[dict]:
    """{"sweep_dir", "index", "overrides"} when the job folder belongs to a sweep."""
    info = read_json(Path(job_dir) / POINT_FILE)
    return info if isinstance(info, dict) else None


def record_states(sweep_dir: str | os.PathLike, states: dict[str, str], manifest: Optional[Manifest] = None) -> None:
    """Write scheduler states ({job id: state}) read now into the manifest ("status when last read")."""
    if not states:
        return
    stamp = now_iso()
    # not fsynced: a state lost to an OS crash is read again by the next `jobs status`
    with (manifest or Manifest(sweep_dir)).edit(durable=False) as points:
        for point in points:
            if point.get("job_id") in states:
                point["state"], point["state_at"] = states[point["job_id"]], stamp
