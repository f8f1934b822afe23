"""What the trainer tells: its log lines ([launcher.train] ...) and its heartbeat (global rank 0 only).

The heartbeat file is written through launcher.jobfolder.progress.write_heartbeat; phases are
launcher.jobfolder.progress.TrainerPhase. A failing write is reported once and never stops training.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

from launcher.jobfolder import progress

PREFIX = "[launcher.train]"


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

    def __call__(self, phase: progress.TrainerPhase, step: Optional[int] = None, **extra: Any) -> None:
        if not self.enabled:
            return
        try:
            progress.write_heartbeat(self.attempt_dir, phase, step, **extra)
        except OSError as e:
            if not self._warned:
                say(f"warning: cannot write the heartbeat in {self.attempt_dir}: {e}")
                self._warned = True

    def last_step(self) -> Optional[int]:
        """The step of the last heartbeat written (what a "failed" beat repeats)."""
        last = progress.read_heartbeat(self.attempt_dir)
        return last.get("step") if last else None
