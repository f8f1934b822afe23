"""Shared helpers of the trainer tests: a job folder as the launcher writes it for the trainer (plan.json
only: the trainer reads nothing else), and the trainer or its step wrapper run as the job runs them, with
LAUNCHER_JOB_DIR, LAUNCHER_ATTEMPT_DIR and (for launcher.train itself) LAUNCHER_DEVICE in the environment.

The smoke assets come from conftest's `smoke_assets_local` fixture (scripts/make_smoke_assets.py).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PYTHON, REPO, compose
from launcher.jobfolder.names import PLAN
from launcher.plan.build import build_plan
from launcher.plan.plan import Plan

# small and quick on 2 CPU cores: 2 completions of 8 tokens per step, a metrics row per step
FAST = ("grpo.num_generations=2", "grpo.per_device_train_batch_size=2", "grpo.gradient_accumulation_steps=1",
        "grpo.max_completion_length=8", "grpo.logging_steps=1")
CPU_TRAINING = ("trainer.use_vllm=false",)  # GRPO on CPU generates with transformers (docs/cpu.md)


def need_training_stack() -> None:
    pytest.importorskip("trl")
    pytest.importorskip("math_verify")


def smoke_plan(*overrides: str) -> Plan:
    """The plan `python -m launcher +experiment=smoke cluster=local <FAST> <overrides>` would run."""
    return build_plan(compose("+experiment=smoke", "cluster=local", *FAST, *overrides), python=PYTHON)


def write_job(job_dir: Path, *overrides: str) -> Plan:
    job_dir.mkdir(parents=True, exist_ok=True)
    plan = smoke_plan(*overrides)
    (job_dir / PLAN).write_text(plan.to_json())
    return plan


def job_env(job_dir: Path, attempt_dir: Path, **extra: str) -> dict[str, str]:
    """The environment the supervisor gives a component on a machine without GPUs, offline."""
    env = dict(os.environ, LAUNCHER_JOB_DIR=str(job_dir), LAUNCHER_ATTEMPT_DIR=str(attempt_dir),
               LAUNCHER_BACKEND="local", CUDA_VISIBLE_DEVICES="", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1")
    for name in ("LAUNCHER_SERVER_URL", "LAUNCHER_DEVICE", "LAUNCHER_GROUP_PORT"):
        env.pop(name, None)
    env.update(extra)
    return env


def run(argv: list[str], env: dict[str, str], timeout: int = 420) -> subprocess.CompletedProcess:
    start = time.time()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    print(f"{' '.join(argv[1:4])}: rc {proc.returncode} in {time.time() - start:.1f} s")
    return proc


def run_train(job_dir: Path, attempt: str, *args: str, device: str = "cpu", timeout: int = 420,
              **extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`python -m launcher.train [args]` as the trainer step execs it (LAUNCHER_DEVICE decided)."""
    attempt_dir = job_dir / attempt
    env = job_env(job_dir, attempt_dir, **extra)
    if device:
        env["LAUNCHER_DEVICE"] = device
    return run([PYTHON, "-m", "launcher.train", *args], env, timeout), attempt_dir


def run_trainer_step(job_dir: Path, attempt: str, timeout: int = 420,
                     **extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`python -m launcher.components.trainer_step` as the supervisor starts it (it execs the trainer)."""
    attempt_dir = job_dir / attempt
    return run([PYTHON, "-u", "-m", "launcher.components.trainer_step"], job_env(job_dir, attempt_dir, **extra),
               timeout), attempt_dir


def explain(proc: subprocess.CompletedProcess) -> str:
    return f"rc={proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}"
