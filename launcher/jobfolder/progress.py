"""Progress files of one trainer attempt: heartbeat, metrics, checkpoint handshake.

Written by the trainer (launcher/train/, global rank 0 only) and read by the supervisor and the
sweep report. Standard library only: the login node imports this module.

Files in the attempt folder (`LAUNCHER_ATTEMPT_DIR`, default `<job_dir>/attempt-1`):

- `heartbeat.json`   {"phase", "step", "time", "pid", "host", ...extra}; replaced atomically on
                     every phase change and at every optimizer-step begin/end. Phases, in order:
                     start, load_data, load_model, waiting_for_server (prepared; until the supervisor
                     hands the server over in server_ready.json), build_trainer, train, step,
                     weight_sync, save, preflight, done (plus "failed" when the trainer dies of an
                     exception).
- `metrics.jsonl`    one JSON object per line, each with "time"; see launcher/train/ for the keys.
- `checkpoint.request`  created by the supervisor: save at the next step end and stop.
- `checkpoint.done`  written by the trainer after that save: {"step", "checkpoint", "time"}.
"""

from __future__ import annotations

import enum
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from launcher.jobfolder.jsonio import PathLike, dumps, read_json, write_json_atomic
from launcher.jobfolder.names import CHECKPOINT_DONE, CHECKPOINT_REQUEST, HEARTBEAT, METRICS, PREFLIGHT, VERSIONS


class TrainerPhase(str, enum.Enum):
    """What the trainer is doing, in order (heartbeat.json "phase")."""

    START = "start"
    LOAD_DATA = "load_data"
    LOAD_MODEL = "load_model"
    WAITING_FOR_SERVER = "waiting_for_server"  # prepared; the server's address comes in server_ready.json
    BUILD_TRAINER = "build_trainer"
    TRAIN = "train"
    STEP = "step"
    WEIGHT_SYNC = "weight_sync"
    SAVE = "save"
    PREFLIGHT = "preflight"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Heartbeat:
    """The trainer's last sign of life. `phase` is a TrainerPhase value (kept as text: a newer trainer may
    report a phase this reader does not know); `extra` holds what the trainer added (e.g. checkpoint)."""

    phase: Optional[str]
    step: Optional[int]
    time: Optional[float]
    pid: Optional[int] = None
    host: Optional[str] = None
    extra: dict = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        """A field or an extra by name (what the trainer wrote is open-ended)."""
        if key in ("phase", "step", "time", "pid", "host"):
            value = getattr(self, key)
            return default if value is None else value
        return self.extra.get(key, default)

    @property
    def done(self) -> bool:
        return self.phase == TrainerPhase.DONE.value

    @classmethod
    def from_json(cls, data: dict) -> "Heartbeat":
        known = {"phase", "step", "time", "pid", "host"}
        return cls(phase=data.get("phase"), step=data.get("step"), time=data.get("time"), pid=data.get("pid"),
                   host=data.get("host"), extra={k: v for k, v in data.items() if k not in known})


def heartbeat_record(phase: str, step: Optional[int] = None, **extra: Any) -> dict:
    """A heartbeat, stamped now (the core keys win over extras of the same name)."""
    beat = {"phase": phase, "step": step, "time": time.time(), "pid": os.getpid(), "host": socket.gethostname()}
    for key, value in extra.items():
        if key not in beat:
            beat[key] = value
    if isinstance(beat["phase"], enum.Enum):
        beat["phase"] = beat["phase"].value
    return beat


def write_heartbeat_record(attempt_dir: PathLike, beat: dict) -> None:
    """Replace heartbeat.json atomically and cheaply (it is rewritten several times per training step):
    compact JSON from the C encoder, one temp file per process, a rename over the old file."""
    path = Path(attempt_dir) / HEARTBEAT
    try:
        text = json.dumps(beat, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        text = dumps(beat)  # numpy/torch scalars, NaN
    tmp = path.with_name(f".{HEARTBEAT}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_heartbeat(attempt_dir: PathLike, phase: str, step: Optional[int] = None, **extra: Any) -> dict:
    """Replace <attempt_dir>/heartbeat.json atomically; returns what was written."""
    beat = heartbeat_record(phase, step, **extra)
    write_heartbeat_record(attempt_dir, beat)
    return beat


def read_heartbeat(attempt_dir: PathLike) -> Optional[Heartbeat]:
    """The last heartbeat, or None when there is none (yet) or it cannot be read."""
    beat = read_json(Path(attempt_dir) / HEARTBEAT)
    return Heartbeat.from_json(beat) if isinstance(beat, dict) else None


def heartbeat_age(attempt_dir: PathLike, now: Optional[float] = None) -> Optional[float]:
    """Seconds since the last heartbeat (by its "time"), or None when there is none."""
    beat = read_heartbeat(attempt_dir)
    if beat is None or not isinstance(beat.time, (int, float)):
        return None
    return (time.time() if now is None else now) - beat.time


def append_metrics(attempt_dir: PathLike, row: dict) -> dict:
    """Append one JSON line to <attempt_dir>/metrics.jsonl ("time" added when absent); returns the row."""
    row = dict(row)
    row.setdefault("time", time.time())
    path = Path(attempt_dir) / METRICS
    path.parent.mkdir(parents=True, exist_ok=True)
    line = dumps(row) + "\n"
    # one write() of one line in append mode: readers never see half a row from this writer
    with open(path, "a") as f:
        f.write(line)
        f.flush()
    return row


def read_metrics(attempt_dir: PathLike, tail_bytes: Optional[int] = None) -> list[dict]:
    """All rows of <attempt_dir>/metrics.jsonl; a torn or invalid line (e.g. a crash mid-write) is skipped.

    `tail_bytes` reads only the end of the file (the rows whole within it): what a once-a-second status
    line needs, without rereading a long run's whole history each time."""
    rows: list[dict] = []
    try:
        with open(Path(attempt_dir) / METRICS, "rb") as f:
            if tail_bytes is not None:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - tail_bytes))
                if size > tail_bytes:
                    f.readline()  # the first line is (probably) cut: skip it
            for raw in f:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    except OSError:
        pass
    return rows


def request_checkpoint(attempt_dir: PathLike, reason: str = "") -> Path:
    """Ask the trainer to save at its next step end and stop (what the supervisor does)."""
    path = Path(attempt_dir) / CHECKPOINT_REQUEST
    write_json_atomic(path, {"time": time.time(), "reason": reason})
    return path


def checkpoint_requested(attempt_dir: PathLike) -> bool:
    return (Path(attempt_dir) / CHECKPOINT_REQUEST).exists()


def read_checkpoint_done(attempt_dir: PathLike) -> Optional[dict]:
    """{"step", "checkpoint", "time"} once the trainer has saved for a request, else None."""
    done = read_json(Path(attempt_dir) / CHECKPOINT_DONE)
    return done if isinstance(done, dict) else None


__all__ = ["Heartbeat", "TrainerPhase", "CHECKPOINT_DONE", "CHECKPOINT_REQUEST", "HEARTBEAT", "METRICS", "PREFLIGHT", "VERSIONS",
           "append_metrics", "checkpoint_requested", "dumps", "heartbeat_age", "heartbeat_record", "read_checkpoint_done",
           "read_heartbeat", "read_json", "read_metrics", "request_checkpoint", "write_heartbeat", "write_heartbeat_record",
           "write_json_atomic"]
