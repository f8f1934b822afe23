"""One tracking run per job, whatever the number of attempts: the W&B run's id, project, group, name and tags
are decided once (at submission, from plan.tracking, the sweep point and the submitting environment) and kept
in the job folder (tracking.json); every attempt's trainer gets the same W&B env (WANDB_RUN_ID with
WANDB_RESUME=allow: the run continues) and one TensorBoard folder (<job>/tensorboard, TENSORBOARD_LOGGING_DIR,
read by transformers' TensorBoardCallback). TRL's integrations read these variables themselves, so a user's
script gets them too, and what the script passes (GRPOConfig.run_name, its own wandb.init) wins.

Secrets stay out: the record holds names only; WANDB_API_KEY passes through the environment (cluster.secret_env).
Standard library and PyYAML only: the login node writes the record; W&B and TensorBoard are never imported here.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from launcher.jobfolder import names
from launcher.jobfolder.jsonio import dumps, read_json
from launcher.plan.plan import Plan, TrackingSpec

MAX_NAME = 128  # W&B's display names are cut there


@dataclass(frozen=True)
class TrackingRun:
    """What every attempt of the job logs to (tracking.json)."""

    run_id: str  # the W&B run id, made once per job
    project: str
    name: str
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: list = field(default_factory=list)
    wandb_mode: Optional[str] = None  # None: W&B's own default (online, or $WANDB_MODE in the job)


def new_run_id() -> str:
    """8 lowercase hex digits: W&B accepts them as a run id and as part of its offline folder name."""
    return secrets.token_hex(4)


def decide_run(spec: TrackingSpec, job_name: str, job_dir_name: str, sweep_point: Optional[Mapping[str, Any]],
               environ: Mapping[str, str], run_id: str) -> TrackingRun:
    """The job's run: the config's values, else the submitting environment's WANDB_*, else from the launch
    (project = the job's name; a sweep's point: group sweep-<sweep folder>, name <job>-<point index>; one job:
    name <job>-<job folder>, which leads back to the folder)."""
    sweep = Path(str(sweep_point["sweep_dir"])).name if sweep_point and sweep_point.get("sweep_dir") else None
    if sweep is not None:
        group = spec.group or f"sweep-{sweep}"
        name = f"{job_name}-{sweep_point.get('index')}"
        tags = [*spec.tags, f"sweep-{sweep}"]
    else:
        group = spec.group or environ.get("WANDB_RUN_GROUP") or None
        name = f"{job_name}-{job_dir_name}"
        tags = list(spec.tags)
    return TrackingRun(run_id=run_id, project=spec.project or environ.get("WANDB_PROJECT") or job_name,
                       name=name[:MAX_NAME], entity=spec.entity or environ.get("WANDB_ENTITY") or None, group=group,
                       tags=list(dict.fromkeys(tags)), wandb_mode=spec.wandb_mode or environ.get("WANDB_MODE") or None)


def tracking_env(spec: TrackingSpec, run: TrackingRun, job_dir: Path) -> dict[str, str]:
    """The trainer's environment for the job's run (every attempt the same)."""
    env: dict[str, str] = {}
    if spec.wandb:
        env.update(WANDB_RUN_ID=run.run_id, WANDB_RESUME="allow", WANDB_PROJECT=run.project, WANDB_NAME=run.name,
                   WANDB_DIR=str(job_dir))
        named = (("WANDB_ENTITY", run.entity), ("WANDB_RUN_GROUP", run.group), ("WANDB_MODE", run.wandb_mode))
        env.update({key: value for key, value in named if value})
        if run.tags:
            env["WANDB_TAGS"] = ",".join(run.tags)
    if spec.tensorboard:
        env["TENSORBOARD_LOGGING_DIR"] = str(job_dir / names.TENSORBOARD_DIR)
    return env


def wandb_config(config_text: str, sweep_point: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """The launch's config (config.yaml) and the sweep point, in W&B's config-file format ({key: {value: ...}});
    the trainer adds them to the run's config beside TRL's GRPOConfig (launcher.train.tracking). Not through
    WANDB_CONFIG_PATHS: W&B's SDK no longer reads that one from the environment (a str is refused as a list)."""
    import yaml

    found: dict[str, Any] = {"launch": {"value": yaml.safe_load(config_text) or {}}}
    if sweep_point:
        found["sweep_point"] = {"value": dict(sweep_point)}
    return found


def read_wandb_config(job_dir: Path) -> dict[str, Any]:
    """wandb-config.yaml's values ({} when there is none)."""
    import yaml

    path = Path(job_dir) / names.WANDB_CONFIG
    found = yaml.safe_load(path.read_text()) if path.is_file() else None
    return {k: v.get("value") for k, v in found.items() if isinstance(v, dict)} if isinstance(found, dict) else {}


def read_run(job_dir: Path) -> Optional[TrackingRun]:
    data = read_json(Path(job_dir) / names.TRACKING)
    return TrackingRun(**data) if isinstance(data, dict) and data.get("run_id") else None


def _create(path: Path, text: str) -> bool:
    """Write a new private file; False when it exists already (another node or process was first)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return True


def ensure_run(job_dir: Path, plan: Plan, environ: Mapping[str, str] = os.environ) -> Optional[TrackingRun]:
    """The job's run: read from tracking.json, or decided now and written there once (at submission; in the job
    only for a folder written without it). Exclusive creation: of several writers the first one's run is kept."""
    if plan.tracking is None:
        return None
    job_dir = Path(job_dir)
    kept = read_run(job_dir)
    if kept is not None:
        return kept
    point = read_json(job_dir / names.SWEEP_POINT)
    point = point if isinstance(point, dict) else None
    run = decide_run(plan.tracking, plan.name, job_dir.name, point, environ, new_run_id())
    if plan.tracking.wandb:
        import yaml

        config = job_dir / names.CONFIG
        text = config.read_text() if config.is_file() else ""
        _create(job_dir / names.WANDB_CONFIG, yaml.safe_dump(wandb_config(text, point), sort_keys=False))
    if _create(job_dir / names.TRACKING, dumps(asdict(run), indent=2) + "\n"):
        return run
    return read_run(job_dir) or run


def job_tracking_env(plan: Plan, job_dir: Path, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What the trainer step exports for the job's run ({} when grpo.report_to names neither W&B nor TensorBoard)."""
    run = ensure_run(job_dir, plan, environ)
    return tracking_env(plan.tracking, run, Path(job_dir)) if run is not None and plan.tracking else {}
