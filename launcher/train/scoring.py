"""Calling the reward functions: the guard around each call in training and in the preflight, and
scoring completions the way GRPOTrainer does (for the preflight).

The guard (guard_rewards): each call is announced in the heartbeat (phase as given, stage "reward",
"reward": its name) and closed by another beat (stage "scored"), so a trainer stuck in a reward is
reported by the supervisor's watchdog as stalled in that reward, not in a generic step. With
reward.timeout_s, a call that runs longer ends the trainer from a timer thread: this process's Python
stacks go to its stacks file (launcher/faulthandlers.py), the log says which reward and where it is
stuck, the heartbeat "failed" carries `stalled_reward`, and the process exits EXIT_REWARD_STALLED.
Nothing can interrupt a call stuck in C (math-verify's sympy, a regex), so the process is ended rather
than the call abandoned; a call holding the GIL even starves the timer, and then the watchdog (whose
reason names the reward from the heartbeat) and the supervisor's stack capture end it. The wrapped
functions keep their names (TRL logs rewards/<name>/...) and stay async where they were.

Scoring (score): every function gets prompts, completions, completion_ids, the dataset's other columns
and a trainer state; the reward is the weighted sum over the functions that scored a completion
(None/NaN = not scored), and a completion no function scored is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from launcher import faulthandlers
from launcher.jobfolder.progress import TrainerPhase
from launcher.train.errors import EXIT_REWARD_STALLED, PreflightFailed
from launcher.train.metrics import mean_std
from launcher.train.report import HeartbeatWriter, error


def callable_name(func: Callable) -> str:
    """The name TRL logs a reward under (trl.trainer.utils.get_callable_name): partials unwrapped, else
    the function's or the callable class's name."""
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__name__", type(func).__name__)


def _is_async(func: Callable) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(getattr(func, "__call__", None))


def _is_model(func: Any) -> bool:
    """A reward model (torch.nn.Module): TRL runs it itself, by type; it is left as it is."""
    return hasattr(func, "forward") and hasattr(func, "parameters")


def stuck_at(thread_id: int) -> str:
    """The innermost Python frame of that thread, "file.py:12 in func" ("" when it has none)."""
    frame = sys._current_frames().get(thread_id)
    if frame is None:
        return ""
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} in {frame.f_code.co_name}"


def _step(kwargs: dict) -> Optional[int]:
    """The optimizer step being computed (TRL passes its TrainerState to every reward function)."""
    state = kwargs.get("trainer_state")
    step = getattr(state, "global_step", None)
    return step + 1 if isinstance(step, int) else None


def _stalled(name: str, step: Optional[int], timeout_s: float, thread_id: int, beat: HeartbeatWriter) -> None:
    """The timer fired: the call is still running. Record where, then end this process."""
    where = stuck_at(thread_id)
    message = f"reward function {name!r} ran past reward.timeout_s={timeout_s:g} s at step {step}" + \
              (f", stuck at {where}" if where else "")
    stacks = faulthandlers.dump(message)
    error(f"error: {message}; Python stacks of every thread in {stacks or '(no stacks file: not a launcher job)'}. "
          f"The trainer ends here (reward.timeout_s=null for no limit, or raise it if the reward is only slow)")
    beat(TrainerPhase.FAILED, step, error=message, stalled_reward=name, reward_timeout_s=timeout_s,
         stuck_at=where or None, stacks=str(stacks) if stacks else None, exit_code=EXIT_REWARD_STALLED)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_REWARD_STALLED)  # the call cannot be interrupted; the heartbeat and log are written


@contextlib.contextmanager
def _watched(name: str, step: Optional[int], timeout_s: Optional[float], beat: HeartbeatWriter,
             phase: TrainerPhase) -> Iterator[None]:
    beat(phase, step, stage="reward", reward=name)
    timer = None
    if timeout_s:
        timer = threading.Timer(timeout_s, _stalled, (name, step, timeout_s, threading.get_ident(), beat))
        timer.daemon = True
        timer.start()
    started = time.monotonic()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
        beat(phase, step, stage="scored", reward=name, seconds=round(time.monotonic() - started, 3))


def guard(func: Callable, timeout_s: Optional[float], beat: HeartbeatWriter,
          phase: TrainerPhase = TrainerPhase.STEP) -> Callable:
    """`func` announced in the heartbeat and bounded by timeout_s (None: no limit), same name, same kind."""
    if _is_model(func):
        return func
    name = callable_name(func)
    if _is_async(func):
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            with _watched(name, _step(kwargs), timeout_s, beat, phase):
                return await func(*args, **kwargs)
    else:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            with _watched(name, _step(kwargs), timeout_s, beat, phase):
                return func(*args, **kwargs)
    guarded.__name__ = guarded.__qualname__ = name
    guarded.__doc__ = getattr(func, "__doc__", None)
    guarded.__wrapped__ = func  # type: ignore[attr-defined]
    return guarded


def guard_rewards(funcs: list[Callable], timeout_s: Optional[float], beat: HeartbeatWriter,
                  phase: TrainerPhase = TrainerPhase.STEP) -> list[Callable]:
    """Every reward function guarded (launcher.train.training and the preflight call them so)."""
    return [guard(f, timeout_s, beat, phase) for f in funcs]


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
        name = callable_name(func)
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
