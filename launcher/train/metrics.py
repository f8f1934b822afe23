"""Rows of metrics.jsonl: one per trainer log (kind "train"); the preflight writes its own (kind "preflight").

Keys: step, epoch, loss, reward, reward_std, step_time_s, steps_in_row, completion_mean_length,
completions_per_step, tokens_per_s, learning_rate, grad_norm, weight_sync_s, trl (every key TRL logged).
tokens_per_s estimates the completion tokens generated per second of optimizer-step wall time:

    completions_per_step = per_device_train_batch_size x processes x gradient_accumulation_steps / num_iterations
    tokens_per_s = completions_per_step x completions/mean_length / step_time_s

where step_time_s is the mean wall time between consecutive step ends since the previous row
(generation, weight sync, forward/backward and optimizer included).
"""

from __future__ import annotations

import math
from typing import Any, Optional


def completions_per_step(args: Any) -> float:
    """Completions generated per optimizer step (on average), from the GRPOConfig."""
    return (args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
            / max(1, getattr(args, "num_iterations", 1) or 1))


def _is_number(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def metrics_row(logs: dict, step: int, step_times: list[float], sync_times: list[float], cps: float) -> dict:
    """The "train" row for one TRL log, with the step and weight-sync times gathered since the last row."""
    step_time = sum(step_times) / len(step_times) if step_times else None
    mean_len = logs.get("completions/mean_length")
    tokens_per_s = cps * mean_len / step_time if step_time and _is_number(mean_len) else None
    return {
        "kind": "train",
        "step": step,
        "epoch": logs.get("epoch"),
        "loss": logs.get("loss"),
        "reward": logs.get("reward"),
        "reward_std": logs.get("reward_std"),
        "step_time_s": step_time,
        "steps_in_row": len(step_times),
        "completion_mean_length": mean_len,
        "completions_per_step": cps,
        "tokens_per_s": tokens_per_s,
        "learning_rate": logs.get("learning_rate"),
        "grad_norm": logs.get("grad_norm"),
        "weight_sync_s": sum(sync_times) if sync_times else None,
        "trl": dict(logs),
    }


def mean_std(values: list[float]) -> tuple[Optional[float], Optional[float]]:
    """Mean and sample standard deviation (0 for one value; None, None for none)."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std
