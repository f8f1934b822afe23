"""`jobs logs`: a component's log of a job, and following it across requeues until the job ends."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

from launcher.cli.targets import Target, UsageError
from launcher.jobfolder import names
from launcher.jobfolder.layout import attempts
from launcher.jobfolder.logs import tail_lines
from launcher.slurm.states import FINISHED_STATES, query_states, state_of

COMPONENT_LOGS = ("trainer", "server", "supervisor")


def log_file(job_dir: Path, component: str, attempt: Optional[int]) -> Optional[Path]:
    if component == "batch":
        found = sorted(job_dir.glob("slurm-*.out"))
        return found[-1] if found else None
    folders = attempts(job_dir)
    if attempt is not None:
        folders = [f for f in folders if f.name == f"attempt-{attempt}"]
    return folders[-1] / names.component_log(component) if folders else None


def cmd_logs(target: Target, args) -> int:
    if len(target.points) != 1:
        listing = ", ".join(f"#{p['index']}" for p in target.points)
        raise UsageError(f"logs needs one job: add --point N ({listing})")
    point = target.points[0]
    if not point.get("job_dir"):
        raise UsageError(f"job {point.get('job_id')}: its job folder is not known")
    job_dir = Path(point["job_dir"])
    path = log_file(job_dir, args.component, args.attempt)
    if not args.follow:
        if path is None or not path.exists():
            print(f"launcher: no {args.component} log yet in {job_dir}", file=sys.stderr)
            return 1
        for line in tail_lines(path, args.lines) if args.lines > 0 else path.read_text(errors="replace").splitlines():
            print(line)
        return 0
    return follow_log(job_dir, point.get("job_id"), args.component, args.attempt, args.lines)


def follow_log(job_dir: Path, job_id: Optional[str], component: str, attempt: Optional[int], lines: int,
               poll_s: float = 0.5, state_every_s: float = 5.0) -> int:
    """Print the log as it grows, going on with the next attempt's log after a requeue; ends with the job."""
    current: Optional[Path] = None
    offset = 0
    next_state = 0.0
    finished = said_waiting = False
    try:
        while True:
            grew = False
            if current is not None:
                offset, grew = _drain(current, offset)
            path = log_file(job_dir, component, attempt)
            if path is not None and path != current and path.exists():
                if current is None:  # the start: the last lines so far
                    # the size first, the tail up to it: a line appended while the tail prints is drained next,
                    # once (taken after, it was skipped, and a follower waiting for it never saw it)
                    offset = path.stat().st_size
                    for line in tail_lines(path, lines, end=offset) if lines > 0 else []:
                        print(line, flush=True)
                else:  # a new attempt: its whole log
                    print(f"==> {path} <==", flush=True)
                    offset = 0
                current = path
                offset, more = _drain(current, offset)
                grew = grew or more
            elif current is None and not said_waiting:
                print(f"launcher: waiting for the {component} log in {job_dir}", file=sys.stderr, flush=True)
                said_waiting = True
            if finished and not grew:
                return 0
            if job_id and time.monotonic() >= next_state:
                next_state = time.monotonic() + state_every_s
                finished = state_of(query_states([job_id]).get(job_id)) in FINISHED_STATES
            time.sleep(poll_s)
    except KeyboardInterrupt:
        return 130


def _drain(path: Path, offset: int) -> tuple[int, bool]:
    """Print what was appended to path since offset; (new offset, whether anything was)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return offset, False
    if data:
        sys.stdout.write(data.decode(errors="replace"))
        sys.stdout.flush()
    return offset + len(data), bool(data)
