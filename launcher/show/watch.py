"""What a job is doing, read from its folder, shown as one live line (rich) or plain lines.

Phases: queued -> server starting (elapsed; the trainer's phase while it prepares alongside) -> server
healthy -> trainer running (step, reward) -> finished. The same reader serves the local backend, `cluster.wait=true` and the jobs CLI.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from launcher.jobfolder.layout import latest_attempt
from launcher.jobfolder.progress import read_heartbeat, read_metrics
from launcher.jobfolder.records import Phase, read_result, read_status


def describe(job_dir: Path, scheduler_state: Optional[str] = None) -> str:
    """One line saying where the job is."""
    attempt = latest_attempt(job_dir)
    if attempt is None:
        return f"queued ({scheduler_state})" if scheduler_state else "queued"
    label = f"[{attempt.name}] "
    result = read_result(attempt)
    if result is not None and not result.provisional:
        return label + f"finished: {result.state.value} - {result.summary}"
    status = read_status(attempt)
    beat = read_heartbeat(attempt)
    if status is None or status.phase is Phase.SERVER_STARTING:
        elapsed = f" ({time.time() - status.since:.0f} s)" if status and status.since else ""
        preparing = f", trainer {beat.phase}" if beat is not None and beat.phase else ""  # the overlapped start
        return label + f"server starting{elapsed}{preparing}"
    metrics = read_metrics(attempt, tail_bytes=16384)
    parts = [label + "server healthy, trainer running" if status.server_url else label + "trainer running"]
    if beat is not None and beat.phase:
        parts.append(f"phase {beat.phase}")
    if beat is not None and beat.step is not None:
        parts.append(f"step {beat.step}")
    last = next((m for m in reversed(metrics) if m.get("reward") is not None), None)
    if last:
        parts.append(f"reward {last['reward']:.3f}")
    return ", ".join(parts)


class Display:
    """A live line on a terminal, one plain line per change otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.live = None
        self.last = None
        if self.stream.isatty():
            from rich.console import Console
            from rich.live import Live

            self.live = Live("", console=Console(file=self.stream), refresh_per_second=4, transient=False)
            self.live.start()

    def show(self, line: str) -> None:
        if self.live is not None:
            self.live.update(line)
            return
        # plain output: a line per change of phase, not per tick of an elapsed-time counter
        key = re.sub(r" \(\d+ s\)", "", line)
        if key != self.last:
            self.last = key
            print(f"launcher: {line}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


def follow(job_dir: Path, done: Callable[[], bool], scheduler_state: Callable[[], Optional[str]] = lambda: None,
           every_s: float = 1.0, stream=None) -> None:
    """Show the job's phase until done() is true."""
    display = Display(stream)
    try:
        while not done():
            display.show(describe(job_dir, scheduler_state()))
            time.sleep(every_s)
        display.show(describe(job_dir, scheduler_state()))
    finally:
        display.close()


def follow_in_background(job_dir: Path, stream=None) -> Callable[[], None]:
    """Start following in a thread; returns the function that stops it."""
    stop = threading.Event()
    thread = threading.Thread(target=follow, args=(job_dir, stop.is_set), kwargs={"stream": stream}, daemon=True)
    thread.start()

    def finish() -> None:
        stop.set()
        thread.join(timeout=5)

    return finish


def watch_slurm_job(job, job_dir: Path) -> int:
    """Foreground wait for a Slurm job (cluster.wait=true); exit code 0 when it completed."""
    from launcher.slurm.states import FINISHED_STATES

    state = {"value": "PENDING"}

    def scheduler_state() -> str:
        state["value"] = job.watcher.get_state(job.job_id)
        return state["value"]

    follow(job_dir, lambda: state["value"] in FINISHED_STATES, scheduler_state, every_s=2.0)
    print(f"launcher: job {job.job_id} ended {state['value']}; job folder {job_dir}")
    return 0 if state["value"] == "COMPLETED" else 1
