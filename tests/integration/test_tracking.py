"""Tracking across a real requeue on the test cluster: a job that reports to W&B (offline, as on nodes without
internet) and TensorBoard, trained through the real vLLM CPU server, is requeued once by an operator's
`scontrol requeue` after its first checkpoint and completes. Both attempts log to ONE W&B run (the id kept in
tracking.json: two offline-run-*-<id> folders, one per attempt, the same id) and to ONE TensorBoard folder
whose steps run 1..max_steps once (attempt 2 starts at its checkpoint's step + 1, never at 1 again). The W&B
API key given in the environment is nowhere in the job folder. The counter-cases (a second id without the kept
record, a restarting TensorBoard axis without the resume marker) are in tests/test_tracking.py.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time

import pytest

from launcher.jobfolder.records import Cause, State

from tracking_files import event_file_steps, offline_runs, one_axis, shown_steps, wandb_run
from .conftest import launch, report, result_of, resumed_from, wait_state, wait_step

pytestmark = pytest.mark.cluster

STEPS = 8
TAG = "train/loss"  # logged at every step (logging_steps=1) by both TRL integrations


def test_one_wandb_and_tensorboard_run_across_a_requeue(cluster_env, smoke_assets, tmp_path, name):
    api_key = f"wandb{secrets.token_hex(16)}"
    env = {**cluster_env, "WANDB_API_KEY": api_key}
    job = launch(env, tmp_path, f"name={name}", f"grpo.max_steps={STEPS}", "grpo.save_steps=2",
                 "grpo.report_to=[wandb,tensorboard]", "tracking.wandb_mode=offline", "tracking.tags=[ci,requeue]")
    kept = json.loads((job.job_dir / "tracking.json").read_text())  # made at submission, before any attempt
    assert kept["project"] == name and kept["name"] == f"{name}-{job.job_dir.name}", kept

    wait_step(job, 3, attempt=1)  # past checkpoint-2
    requeued = time.time()
    subprocess.run(["scontrol", "requeue", job.job_id], check=True, env=cluster_env)
    first = result_of(job, 1, 60)
    assert first.state is State.REQUEUED and first.cause is Cause.REQUEUE, first
    resumed = resumed_from(job, 2)
    assert resumed >= 2 and resumed % 2 == 0
    assert wait_state(job.job_id, 600) == "COMPLETED"
    report("scontrol requeue with W&B + TensorBoard", "COMPLETED", time.time() - requeued, [])

    # W&B: one run id, written to by both attempts (an offline run folder each), named from the launch
    runs = offline_runs(job.job_dir)
    assert [run_id for run_id, _ in runs] == [kept["run_id"]] * 2, runs
    first_run, second_run = (wandb_run(folder) for _, folder in runs)
    for run in (first_run, second_run):
        assert (run["run_id"], run["project"], run["name"]) == (kept["run_id"], name, kept["name"]), run
        assert run["tags"] == ["ci", "requeue"], run["tags"]
        assert run["config"]["launch"]["name"] == name  # the launch's config (config.yaml) beside GRPOConfig's
        assert run["config"]["max_steps"] == STEPS
    assert first_run["steps"][0] == 1 and one_axis(first_run["steps"]), first_run["steps"]
    assert second_run["steps"] == list(range(resumed + 1, STEPS + 1)), (resumed, second_run["steps"])

    # TensorBoard: one folder of the job; attempt 2's file goes on from the checkpoint, the axis shown is 1..N once
    folder = job.job_dir / "tensorboard"
    per_file = event_file_steps(folder, TAG)
    assert len(per_file) == 2 and per_file[0][0] == 1 and per_file[1][0] == resumed + 1, per_file
    assert shown_steps(folder, TAG) == list(range(1, STEPS + 1))
    assert not list(job.job_dir.glob("output/runs")), "TensorBoard wrote a folder per attempt under output_dir"

    # the API key came through the environment and was written nowhere
    leaked = [str(p) for p in job.job_dir.rglob("*") if p.is_file() and api_key.encode() in p.read_bytes()]
    assert leaked == []
