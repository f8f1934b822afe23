"""The job as the trainer sees it: the Plan from plan.json, the folders and what the step wrapper decided.

Read from the environment (the sbatch script, the supervisor and launcher.components.trainer_step set it):

- `LAUNCHER_JOB_DIR`      the job folder; the trainer reads only `plan.json` there (config.yaml is a record)
- `LAUNCHER_ATTEMPT_DIR`  this attempt's folder (default `<job_dir>/attempt-1`)
- `LAUNCHER_DEVICE`       "cuda" | "cpu", decided once by the step wrapper (launcher.node.resolve_device);
                          unset: plan.device when it is "cuda" or "cpu" (an "auto" plan needs the wrapper)
- `LAUNCHER_SERVER_URL`   the vLLM server, e.g. http://10.213.0.11:41234, for a trainer run by hand; under
                          the supervisor it is unset and the address comes in server_ready.json once the
                          server is healthy (launcher.train.handover)
- `RANK` / `WORLD_SIZE`   set by `accelerate launch`; absent = one process, rank 0

`plan.grpo` holds the GRPOConfig kwargs, where {job_dir} and {attempt_dir} are filled here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from launcher.jobfolder.names import ATTEMPT_PREFIX, JOB_DIR_ENV, PLAN
from launcher.node import DEVICE_ENV, DEVICES
from launcher.plan import placeholders
from launcher.plan.plan import Plan
from launcher.train.errors import JobError
from launcher.train.ranks import global_rank, world_size

ATTEMPT_DIR_ENV = "LAUNCHER_ATTEMPT_DIR"
SERVER_URL_ENV = "LAUNCHER_SERVER_URL"


@dataclass(frozen=True)
class Folders:
    job_dir: Path
    attempt_dir: Path


@dataclass(frozen=True)
class Job:
    folders: Folders
    plan: Plan
    grpo: dict[str, Any]  # plan.grpo with {job_dir} / {attempt_dir} filled
    device: str  # "cuda" | "cpu"
    server_url: Optional[str]
    rank: int
    world_size: int

    @property
    def job_dir(self) -> Path:
        return self.folders.job_dir

    @property
    def attempt_dir(self) -> Path:
        return self.folders.attempt_dir

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def use_cpu(self) -> bool:
        return self.device == "cpu"

    @property
    def server_mode(self) -> bool:
        """GRPO generates through the separate vLLM server (weight sync over NCCL)."""
        return bool(self.grpo.get("use_vllm")) and self.grpo.get("vllm_mode") == "server"

    @property
    def output_dir(self) -> str:
        return str(self.grpo.get("output_dir") or self.job_dir / "output")

    @property
    def trainer_nodes(self) -> int:
        component = self.plan.component("trainer")
        return component.nodes if component else 1


def folders(environ: Mapping[str, str] = os.environ) -> Folders:
    """The job and attempt folders from LAUNCHER_JOB_DIR / LAUNCHER_ATTEMPT_DIR."""
    job = environ.get(JOB_DIR_ENV)
    if not job:
        raise JobError(f"{JOB_DIR_ENV} is not set (the launcher sets it to the job folder; "
                       f"run this through the trainer step, or set it yourself)")
    job_dir = Path(job).expanduser().resolve()
    attempt = environ.get(ATTEMPT_DIR_ENV) or str(job_dir / f"{ATTEMPT_PREFIX}1")
    return Folders(job_dir, Path(attempt).expanduser().resolve())


def read_plan(job_dir: Path) -> Plan:
    path = job_dir / PLAN
    if not path.is_file():
        raise JobError(f"{path} does not exist (is {job_dir} a job folder written by the launcher?)")
    try:
        return Plan.from_json(path.read_text())
    except Exception as e:  # noqa: BLE001 - any unreadable plan is a bad job folder
        raise JobError(f"cannot read {path}: {type(e).__name__}: {e}") from None


def device_of(plan: Plan, environ: Mapping[str, str]) -> str:
    """LAUNCHER_DEVICE as the step wrapper decided it; never probed here."""
    device = environ.get(DEVICE_ENV) or (plan.device if plan.device in DEVICES else "")
    if not device:
        raise JobError(f"{DEVICE_ENV} is not set and plan.device is {plan.device!r}: the trainer step "
                       "(launcher.components.trainer_step) decides the device; or set it to cuda or cpu")
    if device not in DEVICES:
        raise JobError(f"{DEVICE_ENV}={device!r} is none of {', '.join(DEVICES)}")
    return device


def load_job(where: Folders, environ: Mapping[str, str] = os.environ) -> Job:
    plan = read_plan(where.job_dir)
    grpo = placeholders.fill(dict(plan.grpo), {placeholders.JOB_DIR: where.job_dir,
                                               placeholders.ATTEMPT_DIR: where.attempt_dir})
    return Job(folders=where, plan=plan, grpo=grpo, device=device_of(plan, environ),
               server_url=environ.get(SERVER_URL_ENV) or None, rank=global_rank(), world_size=world_size())
