"""The short summary a finished training attempt ends with, from its metrics.jsonl ("train" rows):

    training: 30 steps in 41.2 s (0.73 steps/s); reward 0.176 (first 5 steps) -> 0.951 (last 5 steps);
    weight sync 0.05 s per step (3 % of the step)

"first/last N steps": the mean reward over the first and the last N logged steps (N = a fifth of the
rows, at least 1, at most 10). Step time is the trainer's wall time between optimizer-step ends
(generation, weight sync, forward/backward, optimizer); weight sync is the time TRL's sync_weights took.
Standard library only (the local backend prints it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from launcher.jobfolder.progress import read_metrics


def _mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def training_summary(rows: list[dict]) -> Optional[str]:
    """One line, or None when the attempt logged no training step (a preflight, a failure before step 1)."""
    train = [r for r in rows if r.get("kind") == "train" and r.get("step") is not None]
    if not train:
        return None
    steps = sum(int(r.get("steps_in_row") or 0) for r in train)
    seconds = sum(float(r["step_time_s"]) * int(r.get("steps_in_row") or 0) for r in train
                  if r.get("step_time_s") is not None)
    parts = [f"training: {steps} steps in {seconds:.1f} s ({steps / seconds:.2f} steps/s)" if seconds
             else f"training: {steps} steps"]
    rewards = [float(r["reward"]) for r in train if r.get("reward") is not None]
    if rewards:
        n = max(1, min(10, len(rewards) // 5))
        parts.append(f"reward {_mean(rewards[:n]):.3f} (first {n} steps) -> {_mean(rewards[-n:]):.3f} "
                     f"(last {n} steps)")
    syncs = [float(r["weight_sync_s"]) for r in train if r.get("weight_sync_s") is not None]
    if syncs:
        per_step = sum(syncs) / steps if steps else 0.0
        share = f" ({100 * sum(syncs) / seconds:.0f} % of the step)" if seconds else ""
        parts.append(f"weight sync {per_step:.3f} s per step{share}")
    else:
        parts.append("no weight sync (generation inside the trainer)")
    return "; ".join(parts)


def attempt_summary(attempt_dir: Path) -> Optional[str]:
    return training_summary(read_metrics(attempt_dir))
