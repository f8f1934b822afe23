"""The trainer's side of the job's one tracking run (launcher.jobfolder.tracking decides it; the trainer step
exports its WANDB_* / TENSORBOARD_LOGGING_DIR): check first thing that the backends grpo.report_to names are
installed in this Python, add the launch's config to the W&B run's config, and when an attempt resumes, tell
TensorBoard where the run goes on.

A requeued attempt resumes from the newest checkpoint, so the steps an earlier attempt logged after it come
again. transformers' TensorBoardCallback opens a new event file per attempt in the one folder; before it does,
rank 0 writes a SessionLog START at the first step this attempt will log (what SummaryWriter's purge_step
writes): TensorBoard then drops the earlier attempt's events from that step on, and the step axis runs
1..max_steps once, without restarting or doubling.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import time
from pathlib import Path
from typing import Optional

from launcher.jobfolder.names import TENSORBOARD_DIR
from launcher.jobfolder.tracking import read_wandb_config
from launcher.train.errors import JobError
from launcher.train.job import Job
from launcher.validate.tracking import INSTALL_HINT, PACKAGES

CHECKPOINT_STEP = re.compile(r"checkpoint-(\d+)$")
EVENT_FILE = "events.out.tfevents."


def check_installed(job: Job) -> None:
    """A backend the job logs to but this Python lacks ends the job now, naming the key (not after the model loads)."""
    spec = job.plan.tracking
    if spec is None:
        return
    missing = [b for b in spec.backends if importlib.util.find_spec(PACKAGES[b]) is None]
    if missing:
        raise JobError(f"grpo.report_to names {', '.join(missing)}, not installed in {sys.executable}: {INSTALL_HINT}")


def resume_step(checkpoint: Optional[str]) -> int:
    """The step a checkpoint-N folder holds (0: no checkpoint, the attempt starts from the beginning)."""
    found = CHECKPOINT_STEP.search(str(checkpoint or "").rstrip("/"))
    return int(found.group(1)) if found else 0


def tensorboard_dir(job: Job) -> Optional[Path]:
    spec = job.plan.tracking
    return job.job_dir / TENSORBOARD_DIR if spec is not None and spec.tensorboard else None


def mark_resume(job: Job, checkpoint: Optional[str]) -> Optional[int]:
    """On rank 0, when an earlier attempt wrote events: the START marker at the first step this attempt logs.
    Returns that step (None: nothing written)."""
    folder = tensorboard_dir(job)
    if checkpoint is True:
        return None  # a script's resume_from_checkpoint=True: Trainer's own newest, step unknown here
    if not job.is_main or folder is None or not folder.is_dir() or not any(
            name.startswith(EVENT_FILE) for name in os.listdir(folder)):
        return None
    from tensorboard.compat.proto.event_pb2 import Event, SessionLog
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    first = resume_step(checkpoint) + 1
    writer = EventFileWriter(str(folder))  # named before the callback's own file of this attempt: read first
    writer.add_event(Event(step=first, wall_time=time.time(), session_log=SessionLog(status=SessionLog.START)))
    writer.close()
    return first


def tracking_callbacks(job: Job) -> list:
    """With W&B: a callback that adds the launch's config (and the sweep point) to the run's config once TRL's
    WandbCallback has started the run (it runs first: report_to's callbacks come before the trainer's own)."""
    spec = job.plan.tracking
    if spec is None or not spec.wandb:
        return []
    from transformers import TrainerCallback

    class LaunchConfigToWandb(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            wandb = sys.modules.get("wandb")  # imported by WandbCallback when the run reports to W&B
            if state.is_world_process_zero and wandb is not None and getattr(wandb, "run", None) is not None:
                wandb.config.update(read_wandb_config(job.job_dir), allow_val_change=True)

    return [LaunchConfigToWandb()]
