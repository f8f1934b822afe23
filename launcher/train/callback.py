"""The launcher's TrainerCallback: heartbeats at step begin/end, weight syncs and saves, a metrics row per
trainer log, the checkpoint handshake, and every rank's own record at the end (launcher.train.rank_record).
A weight sync that fails (trainer.sync_timeout_s bounds it on CPU) raises WeightSyncFailed naming the phase;
a resumed training records what it started from (launcher.train.resume_record).

Checkpoint on request: when `<attempt_dir>/checkpoint.request` exists at a step end (rank 0 looks, the
decision is broadcast to all ranks), the trainer saves `checkpoint-<step>`, writes `checkpoint.done`
({"step", "checkpoint", "time"}, durable) and stops; launcher.train.training then exits 0.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

from transformers import TrainerCallback

from launcher.jobfolder import progress
from launcher.jobfolder.names import CHECKPOINT_DONE, CHECKPOINT_REQUEST
from launcher.jobfolder.progress import TrainerPhase
from launcher.train.cpu_resume import accept_indexed_cpu_locations, needed
from launcher.train.metrics import completions_per_step, metrics_row
from launcher.train.rank_record import write_record
from launcher.train.ranks import global_rank, world_size
from launcher.train.report import HeartbeatWriter, say
from launcher.train.resume_record import write_resume_record


class WeightSyncFailed(RuntimeError):
    """A weight sync to the server that failed or did not finish within trainer.sync_timeout_s; the message
    names the phase (weight_sync) and the step, and the trainer's failure reason repeats it."""


def sync_failure(step: Optional[int], seconds: float, timeout_s: Optional[float], error: BaseException) -> str:
    bound = f" (trainer.sync_timeout_s={timeout_s:g} s)" if timeout_s else ""
    return (f"weight sync to the server failed in phase {TrainerPhase.WEIGHT_SYNC.value!r} before step {step}, "
            f"after {seconds:.1f} s{bound}: {type(error).__name__}: {error}")


def hook_weight_sync(target: Any, before: Callable[[], None], after: Callable[[float, bool], None],
                     failure: Optional[Callable[[float, BaseException], str]] = None) -> bool:
    """Wrap `target.sync_weights` (TRL 1.16 VLLMGeneration) so `before()` and `after(seconds, ok)` run around it;
    an exception becomes WeightSyncFailed(failure(seconds, error)) when `failure` is given.

    GRPOTrainer calls `self.vllm_generation.sync_weights()` at the first generation of each new
    global step; an instance attribute shadows the method, so the trainer calls the wrapper.
    Returns False when there is nothing to wrap (or it is wrapped already).
    """
    original = getattr(target, "sync_weights", None)
    if original is None or getattr(original, "_launcher_wrapped", False):
        return False

    @functools.wraps(original)
    def sync_weights(*args: Any, **kwargs: Any) -> Any:
        before()
        start, ok = time.time(), False
        try:
            result = original(*args, **kwargs)
            ok = True
            return result
        except Exception as e:
            if failure is None or isinstance(e, WeightSyncFailed):
                raise
            raise WeightSyncFailed(failure(time.time() - start, e)) from e
        finally:
            after(time.time() - start, ok)

    sync_weights._launcher_wrapped = True  # type: ignore[attr-defined]
    target.sync_weights = sync_weights
    return True


class LauncherCallback(TrainerCallback):
    """Heartbeats at step begin/end and saves, metrics rows on logs, checkpoint on request."""

    def __init__(self, attempt_dir: Path, beat: HeartbeatWriter, is_main: bool):
        self.attempt_dir = attempt_dir
        self.beat = beat
        self.is_main = is_main
        self.trainer: Any = None
        self.last_step_end: Optional[float] = None
        self.step_times: list[float] = []
        self.sync_times: list[float] = []
        self.checkpoint_step: Optional[int] = None  # the step saved for a checkpoint request
        self.checkpoint_path: Optional[str] = None
        self.steps_taken: list[int] = []  # this rank's optimizer steps in this attempt (its rank record)
        self.started_at: Optional[int] = None  # the global step training (re)started from

    # ---------------------------------------------------------------- wiring
    def attach(self, trainer: Any) -> None:
        self.trainer = trainer
        generation = getattr(trainer, "vllm_generation", None) if getattr(trainer, "use_vllm", False) else None
        client = getattr(generation, "vllm_client", None)
        timeout_s = getattr(client, "timeout_s", None)  # the CPU client's trainer.sync_timeout_s

        def failure(seconds: float, error: BaseException) -> str:
            return sync_failure(self._step(), seconds, timeout_s, error)

        if generation is not None and hook_weight_sync(generation, self._sync_begin, self._sync_end, failure):
            say("weight-sync heartbeats hooked on GRPOTrainer.vllm_generation.sync_weights")

    def _step(self) -> Optional[int]:
        """The optimizer step in progress (a sync precedes that step's generation)."""
        return self.trainer.state.global_step + 1 if self.trainer is not None else None

    def _sync_begin(self) -> None:
        self.beat(TrainerPhase.WEIGHT_SYNC, self._step(), stage="begin")

    def _sync_end(self, seconds: float, ok: bool) -> None:
        self.sync_times.append(seconds)
        self.beat(TrainerPhase.WEIGHT_SYNC, self._step(), stage="end", seconds=round(seconds, 3), ok=ok)

    def _accelerator(self) -> Any:
        accelerator = getattr(self.trainer, "accelerator", None)
        return accelerator if accelerator is not None and accelerator.num_processes > 1 else None

    def _checkpoint_requested(self) -> bool:
        """Rank 0 looks for the request file; the answer is broadcast so every rank stops together."""
        flag = self.is_main and progress.checkpoint_requested(self.attempt_dir)
        if self._accelerator() is not None:
            from accelerate.utils import broadcast_object_list

            box = [flag]
            broadcast_object_list(box, from_process=0)
            flag = bool(box[0])
        return flag

    def _barrier(self) -> None:
        accelerator = self._accelerator()
        if accelerator is not None:
            accelerator.wait_for_everyone()

    # ---------------------------------------------------------------- callbacks
    def on_init_end(self, args, state, control, **kwargs):
        # before train() loads a checkpoint: several CPU processes resume with map_location cpu:0
        if needed(args.device, args.world_size) and accept_indexed_cpu_locations() and self.is_main:
            say(f"CPU world of {args.world_size} processes on {args.device}: torch.load accepts cpu:<n> "
                "(launcher.train.cpu_resume)")

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_step_end = time.time()
        self.started_at = state.global_step
        if self.is_main and state.global_step > 0:  # resumed: the checkpoint's weights and optimizer are loaded now
            try:
                write_resume_record(self.attempt_dir, state.global_step, kwargs.get("model"), kwargs.get("optimizer"))
            except OSError as e:  # evidence, never a reason to fail the training
                say(f"could not write the resume record: {e}")
        self.beat(TrainerPhase.TRAIN, state.global_step, max_steps=state.max_steps)

    def on_step_begin(self, args, state, control, **kwargs):
        self.beat(TrainerPhase.STEP, state.global_step + 1, stage="begin")

    def on_step_end(self, args, state, control, **kwargs):
        now = time.time()
        if self.last_step_end is not None:
            self.step_times.append(now - self.last_step_end)
        self.last_step_end = now
        self.steps_taken.append(state.global_step)
        # the request is looked for before the beat: the beat wakes the heartbeat's writer thread, which
        # would otherwise take the interpreter while this thread waits on the file system
        requested = self.checkpoint_step is None and self._checkpoint_requested()
        self.beat(TrainerPhase.STEP, state.global_step, stage="end",
                  step_time_s=round(self.step_times[-1], 3) if self.step_times else None)
        if requested:
            self.checkpoint_step = state.global_step
            control.should_save = True
            control.should_training_stop = True
            control.should_log = True
            if self.is_main:
                say(f"checkpoint requested ({CHECKPOINT_REQUEST}): saving at step {state.global_step} and stopping")
        if control.should_save:
            self.beat(TrainerPhase.SAVE, state.global_step, stage="begin")
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        model = model if model is not None else getattr(self.trainer, "model", None)
        if model is None:
            return
        try:
            write_record(self.attempt_dir, global_rank(), world_size(), self.steps_taken, model, self.started_at)
        except OSError as e:  # a record is evidence, never a reason to fail the training that ended
            say(f"rank {global_rank()}: could not write its rank record: {e}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not self.is_main:
            return
        if "loss" not in logs and "reward" not in logs:
            return  # the end-of-training summary (train_runtime, ...) or eval logs
        row = metrics_row(logs, state.global_step, self.step_times, self.sync_times, completions_per_step(args))
        self.step_times, self.sync_times = [], []
        self.beat.metrics(row)  # appended to metrics.jsonl by the heartbeat's writer thread

    def on_save(self, args, state, control, **kwargs):
        path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        self.beat(TrainerPhase.SAVE, state.global_step, stage="end", checkpoint=path)
        if self.checkpoint_step is not None and self.checkpoint_path is None:
            self._barrier()  # every rank has written its shards
            self.checkpoint_path = path
            if self.is_main:
                progress.write_json_atomic(self.attempt_dir / CHECKPOINT_DONE,
                                           {"step": state.global_step, "checkpoint": path, "time": time.time()},
                                           durable=True)
        return control
