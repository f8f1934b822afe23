"""Progress files of one trainer attempt: heartbeat, metrics, checkpoint handshake.

Written by the trainer (launcher/train.py, global rank 0 only) and read by the supervisor and the
sweep report. Standard library only: the login node imports this module.

Files in the attempt folder (`LAUNCHER_ATTEMPT_DIR`, default `<job_dir>/attempt-1`):

- `heartbeat.json`   {"phase", "step", "time", "pid", "host", ...extra}; replaced atomically on
                     every phase change and at every optimizer-step begin/end. Phases, in order:
                     start, load_model, load_data, build_trainer, train, step, weight_sync, save,
                     preflight, done (plus "failed" when the trainer dies of an exception).
- `metrics.jsonl`    one JSON object per line, each with "time"; see launcher/train.py for the keys.
- `checkpoint.request`  created by the supervisor: save at the next step end and stop.
- `checkpoint.done`  written by the trainer after that save: {"step", "checkpoint", "time"}.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Union

HEARTBEAT = "heartbeat.json"
METRICS = "metrics.jsonl"
VERSIONS = "versions.json"
PREFLIGHT = "preflight.json"
CHECKPOINT_REQUEST = "checkpoint.request"
CHECKPOINT_DONE = "checkpoint.done"

PathLike = Union[str, "os.PathLike[str]"]


def _json_default(value: Any) -> Any:
    """Numbers from numpy/torch (anything with .item()), paths and sets; repr for the rest."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)


def _clean(value: Any) -> Any:
    """NaN/inf -> None (strict JSON readers reject them), recursively."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def dumps(obj: Any, **kwargs: Any) -> str:
    """Strict JSON (no NaN), tolerant of numpy/torch scalars."""
    return json.dumps(_clean(obj), default=_json_default, allow_nan=False, **kwargs)


def write_json_atomic(path: PathLike, obj: Any, durable: bool = False) -> None:
    """Write JSON to a temp file in the same folder, then rename over `path`: readers never see half a
    file. `durable` also fsyncs first (for records that must survive a node crash, like checkpoint.done);
    heartbeats skip it, since they are rewritten several times per training step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(dumps(obj, indent=2))
            f.write("\n")
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_json(path: PathLike) -> Optional[Any]:
    """The parsed file, or None when it is missing, empty or not valid JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_heartbeat(attempt_dir: PathLike, phase: str, step: Optional[int] = None, **extra: Any) -> dict:
    """Replace <attempt_dir>/heartbeat.json atomically; returns what was written."""
    beat = {"phase": phase, "step": step, "time": time.time(), "pid": os.getpid(), "host": socket.gethostname()}
    for key, value in extra.items():
        if key not in beat:
            beat[key] = value
    write_json_atomic(Path(attempt_dir) / HEARTBEAT, beat)
    return beat


def read_heartbeat(attempt_dir: PathLike) -> Optional[dict]:
    """The last heartbeat, or None when there is none (yet) or it cannot be read."""
    beat = read_json(Path(attempt_dir) / HEARTBEAT)
    return beat if isinstance(beat, dict) else None


def heartbeat_age(attempt_dir: PathLike, now: Optional[float] = None) -> Optional[float]:
    """Seconds since the last heartbeat (by its "time"), or None when there is none."""
    beat = read_heartbeat(attempt_dir)
    if beat is None or not isinstance(beat.get("time"), (int, float)):
        return None
    return (time.time() if now is None else now) - beat["time"]


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


__all__ = ["CHECKPOINT_DONE", "CHECKPOINT_REQUEST", "HEARTBEAT", "METRICS", "PREFLIGHT", "VERSIONS",
           "append_metrics", "checkpoint_requested", "dumps", "heartbeat_age", "read_checkpoint_done",
           "read_heartbeat", "read_json", "read_metrics", "request_checkpoint", "write_heartbeat",
           "write_json_atomic"]
