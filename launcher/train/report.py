"""What the trainer tells: its log lines ([launcher.train] ...) and its heartbeat (global rank 0 only).

The heartbeat file and the metrics rows are written through launcher.jobfolder.progress; phases are
launcher.jobfolder.progress.TrainerPhase. The training thread only stamps a beat (its time is the
moment of the call) or a metrics row and hands it to a writer thread, which writes the latest beat
(atomic rename) and appends the rows in order: a step pays microseconds, not file system calls
(benchmarks/step_overhead.py). It is no ticking thread: it writes only what the training thread handed
over, so a hung trainer's heartbeat stops as before, and the last beat before a hang is still written.
Terminal beats (done, failed) are written, with every row before them, before the call returns: the
supervisor reads them once the process has exited. A failing write is reported once and never stops
training.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

from launcher.jobfolder import progress

PREFIX = "[launcher.train]"
TERMINAL = (progress.TrainerPhase.DONE, progress.TrainerPhase.FAILED)


def say(message: str) -> None:
    print(f"{PREFIX} {message}", flush=True)


def error(message: str) -> None:
    print(f"{PREFIX} {message}", file=sys.stderr, flush=True)


class HeartbeatWriter:
    """`beat(phase, step, **extra)` -> heartbeat.json in the attempt folder, when `enabled` (global rank 0)."""

    def __init__(self, attempt_dir: Path, enabled: bool):
        self.attempt_dir = attempt_dir
        self.enabled = enabled
        self._warned = False
        self._pending: Optional[dict] = None  # the latest beat not written yet
        self._rows: list[dict] = []  # metrics rows not written yet, in order
        self._last: Optional[dict] = None  # the latest beat handed over
        self._handover = threading.Lock()  # guards _pending and _last
        self._writing = threading.Lock()  # one write at a time, in the order the beats came
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __call__(self, phase: progress.TrainerPhase, step: Optional[int] = None, **extra: Any) -> None:
        if not self.enabled:
            return
        beat = progress.heartbeat_record(phase, step, **extra)
        with self._handover:
            self._pending = self._last = beat
        if phase in TERMINAL:
            self.flush()
        else:
            self._hand_over()

    def metrics(self, row: dict) -> None:
        """A metrics.jsonl row ("time" added now when absent), appended in order by the writer thread."""
        if not self.enabled:
            return
        row = dict(row)
        row.setdefault("time", time.time())
        with self._handover:
            self._rows.append(row)
        self._hand_over()

    def _hand_over(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="launcher-heartbeat", daemon=True)
            self._thread.start()
        self._wake.set()

    def flush(self) -> None:
        """Write what is waiting now: the rows, then the latest beat."""
        with self._writing:
            with self._handover:
                beat, self._pending = self._pending, None
                rows, self._rows = self._rows, []
            try:
                for row in rows:
                    progress.append_metrics(self.attempt_dir, row)
                if beat is not None:
                    progress.write_heartbeat_record(self.attempt_dir, beat)
            except OSError as e:
                if not self._warned:
                    say(f"warning: cannot write the heartbeat or metrics in {self.attempt_dir}: {e}")
                    self._warned = True

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self.flush()

    def last_step(self) -> Optional[int]:
        """The step of the last heartbeat (what a "failed" beat repeats)."""
        if self._last is not None:
            return self._last.get("step")
        last = progress.read_heartbeat(self.attempt_dir)
        return last.get("step") if last else None
