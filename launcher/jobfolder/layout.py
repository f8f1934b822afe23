"""The job folder: one per launch, private, never written over.

Layout (see docs/anatomy.md):
  <job_root>/<name>/<YYYYmmdd-HHMMSS>-<suffix>/
    config.yaml  plan.txt  plan.json  commands.txt  job.sbatch (Slurm)  submission.json
    git.txt  git.diff  (or git.txt saying it is not a git repository)
    code/                your own code the job imports, frozen at submission (launcher.jobfolder.frozen_code)
    submitit/            submitit's pickles and the batch step's own output
    attempt-1/           supervisor.log server.log trainer.log server.json heartbeat.json
                         metrics.jsonl versions.json result.json ...
    attempt-2/ ...       after a requeue
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shlex
import subprocess
from pathlib import Path
from typing import Any, Optional

from launcher import __version__
from launcher.plan import placeholders
from launcher.plan.containers import shared_folders, wrap
from launcher.plan.plan import Plan
from launcher.jobfolder import names
from launcher.jobfolder.config_record import config_yaml
from launcher.jobfolder.frozen_code import freeze
from launcher.jobfolder.tracking import ensure_run
from launcher.jobfolder.jsonio import write_json_atomic as write_json
from launcher.jobfolder.names import ATTEMPT_PREFIX

PRIVATE_DIR = 0o700  # job folders hold logs and configs: not readable or writable by others


def create_job_dir(root: str | os.PathLike, name: str, now: Optional[dt.datetime] = None) -> Path:
    """A new, private folder; never an existing one (mkdir is exclusive)."""
    parent = Path(root).expanduser().resolve() / name
    parent.mkdir(parents=True, exist_ok=True)
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    while True:
        path = parent / f"{stamp}-{secrets.token_hex(2)}"
        try:
            path.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue
        os.chmod(path, PRIVATE_DIR)  # mkdir's mode is filtered by the umask
        return path


def fill(text: str, job_dir: Path) -> str:
    return placeholders.fill(text, {placeholders.JOB_DIR: job_dir})


def attempt_dir(job_dir: Path, attempt: int) -> Path:
    path = Path(job_dir) / f"{ATTEMPT_PREFIX}{attempt}"
    path.mkdir(mode=PRIVATE_DIR, exist_ok=True)
    return path


def attempts(job_dir: Path) -> list[Path]:
    found = [p for p in Path(job_dir).glob(f"{ATTEMPT_PREFIX}*") if p.name[len(ATTEMPT_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(ATTEMPT_PREFIX):]))


def latest_attempt(job_dir: Path) -> Optional[Path]:
    found = attempts(job_dir)
    return found[-1] if found else None


def component_commands(plan: Plan, job_dir: Path) -> str:
    lines = []
    for c in plan.components:
        lines.append(f"# {c.name}: step (on each of its {c.nodes} node(s))")
        lines.append(shlex.join(c.step))
        container = getattr(c, "container", None)
        if container is not None:
            flags, inside = wrap(container, list(c.step), plan.device != "cpu" and c.gpus_per_node > 0,
                                 str(job_dir), shared_folders(plan))
            note = " (srun flags, then the step)" if flags else ""
            lines.append(f"# {c.name}: in its {container.runtime} image{note}")
            lines.append(shlex.join(flags + inside))
        lines.append(f"# {c.name}: which execs (placeholders are filled on the node)")
        lines.append(fill(shlex.join(c.execs), job_dir))
    return "\n".join(lines) + "\n"


def git_snapshot(cwd: str | os.PathLike) -> tuple[str, str]:
    """(summary, diff) of the working tree the user launched from. Past the first call (is it a
    repository?), git's four questions run at once."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "not a git repository (git not available)\n", ""
    if top.returncode != 0:
        return f"not a git repository: {os.path.abspath(cwd)}\n", ""
    questions = [("rev-parse", "HEAD"), ("rev-parse", "--abbrev-ref", "HEAD"), ("status", "--porcelain"),
                 ("diff", "HEAD")]
    running = [subprocess.Popen(["git", *q], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
               for q in questions]
    answers = []
    for process in running:
        try:
            answers.append(process.communicate(timeout=30)[0])
        except subprocess.TimeoutExpired:
            process.kill()
            answers.append(process.communicate()[0] or "")
    commit = answers[0].strip() or "(no commit yet)"
    branch, status = answers[1].strip(), answers[2]
    diff = answers[3] if commit != "(no commit yet)" else ""
    summary = (f"repository: {top.stdout.strip()}\ncommit: {commit}\nbranch: {branch}\n"
               f"uncommitted changes: {'yes' if status.strip() else 'no'}\n{status}")
    return summary, diff


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def script_of(cfg: Any) -> Optional[str]:
    """trainer.script of a typed LaunchConfig or a plain mapping."""
    trainer = cfg.get("trainer") if isinstance(cfg, dict) else getattr(cfg, "trainer", None)
    return (trainer.get("script") if isinstance(trainer, dict) else getattr(trainer, "script", None)) if trainer else None


def write_snapshot(job_dir: Path, plan: Plan, cfg: Any, sbatch_script: Optional[str] = None,
                   cwd: str | os.PathLike = ".", git: Optional[tuple[str, str]] = None) -> None:
    """Everything needed to know later what ran and from what (cfg: the typed LaunchConfig, or a mapping).
    `git`: the (summary, diff) a sweep took once for all its points; without it, git is asked now."""
    write_private(job_dir / names.CONFIG, config_yaml(cfg))
    write_private(job_dir / names.PLAN_TEXT, str(plan) + "\n")
    write_private(job_dir / names.PLAN, plan.to_json())
    write_private(job_dir / names.COMMANDS, component_commands(plan, job_dir))
    if sbatch_script is not None:
        write_private(job_dir / names.SBATCH_SCRIPT, sbatch_script)
    freeze(job_dir, os.path.abspath(cwd), script_of(cfg), plan.reward.funcs)  # what the job imports, as it is now
    ensure_run(job_dir, plan)  # the W&B / TensorBoard run every attempt continues (nothing without grpo.report_to)
    summary, diff = git if git is not None else git_snapshot(cwd)
    write_private(job_dir / names.GIT_SUMMARY, summary)
    if diff:
        write_private(job_dir / names.GIT_DIFF, diff)


def record_submission(job_dir: Path, backend: str, job_id: str, argv: list[str]) -> None:
    write_json(job_dir / names.SUBMISSION, {
        "job_id": job_id, "backend": backend, "launcher_version": __version__,
        "submitted_at": dt.datetime.now().isoformat(timespec="seconds"), "argv": argv,
        "cwd": os.getcwd(),
    })


def load_plan(job_dir: Path) -> Plan:
    return Plan.from_json((Path(job_dir) / names.PLAN).read_text())


def make_private(job_dir: Path) -> None:
    """No group/world write anywhere in the job folder (files made before the job started follow the
    submitting shell's umask; everything the job writes follows the supervisor's umask 077)."""
    for root, dirs, files in os.walk(job_dir):
        for name in dirs + files:
            path = os.path.join(root, name)
            try:
                mode = os.lstat(path).st_mode
                if not os.path.islink(path) and mode & 0o022:
                    os.chmod(path, mode & ~0o022 & 0o7777)
            except OSError:
                pass
