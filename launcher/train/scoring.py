"""Scoring completions with the reward functions the way GRPOTrainer does (for the preflight): every
function gets prompts, completions, completion_ids, the dataset's other columns and a trainer state;
the reward is the weighted sum over the functions that scored a completion (None/NaN = not scored),
and a completion no function scored is skipped.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

from launcher.train.data import reward_name
from launcher.train.errors import PreflightFailed
from launcher.train.metrics import mean_std


@dataclass(frozen=True)
class Scores:
    per_func: dict[str, dict]  # name -> {"mean", "std", "scored", "skipped"}
    totals: list[float]  # the weighted reward of each scored completion
    completions: int

    @property
    def reward(self) -> tuple[Optional[float], Optional[float]]:
        return mean_std(self.totals)

    @property
    def skipped(self) -> int:
        return self.completions - len(self.totals)


def call_reward(func: Callable, **kwargs: Any) -> list:
    if inspect.iscoroutinefunction(func):
        return list(asyncio.run(func(**kwargs)))
    return list(func(**kwargs))


def _as_score(value: Any) -> Optional[float]:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def score(rewards: list[Callable], weights: Optional[list[float]], prompts: list, completions: list,
          completion_ids: list, columns: dict[str, list]) -> Scores:
    """Each function on every completion; PreflightFailed when one raises or miscounts."""
    from transformers import TrainerState

    weights = list(weights) if weights else [1.0] * len(rewards)
    per_func: dict[str, dict] = {}
    scores: list[list[Optional[float]]] = []
    for func in rewards:
        name = reward_name(func)
        try:
            values = call_reward(func, prompts=prompts, completions=completions, completion_ids=completion_ids,
                                 trainer_state=TrainerState(), log_extra=lambda *a, **k: None,
                                 log_metric=lambda *a, **k: None, **columns)
        except Exception as e:  # noqa: BLE001
            raise PreflightFailed(f"reward function {name} failed: {type(e).__name__}: {e}") from e
        if len(values) != len(completions):
            raise PreflightFailed(f"reward function {name} returned {len(values)} rewards for "
                                  f"{len(completions)} completions")
        values = [_as_score(v) for v in values]
        scores.append(values)
        valid = [v for v in values if v is not None]
        mean, std = mean_std(valid)
        per_func[name] = {"mean": mean, "std": std, "scored": len(valid), "skipped": len(values) - len(valid)}
    totals = []
    for i in range(len(completions)):
        parts = [w * s[i] for w, s in zip(weights, scores) if s[i] is not None]
        if parts:
            totals.append(sum(parts))
    return Scores(per_func=per_func, totals=totals, completions=len(completions))
