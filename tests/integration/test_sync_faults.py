"""Faults during a weight sync, on the real test cluster: the trainer trains through the real vLLM CPU server
and syncs its weights over gloo at every step (launcher.sync). Each fault is injected inside an update, between
/start_weight_update and /update_weights: launcher.sync's debug switch DEBUG_PAUSE_WEIGHT_SYNC=N (in cluster.env,
so the trainer has it) makes the N-th sync pause there and write a marker in the job folder; the test waits for
the marker, injects the fault, and lets the trainer go on (a resume marker) where the fault needs it to.

- the server killed mid-update: the job ends FAILED (the supervisor sees the server die, or the trainer's sync
  fails on it first, naming phase weight_sync);
- the server frozen (SIGSTOP, every process of it) mid-update: the sync does not finish within
  trainer.sync_timeout_s and the job ends FAILED naming phase weight_sync, well before the watchdog and the
  health grace;
- the trainer killed mid-update, then the job requeued: the next attempt gets a fresh server, resumes from the
  checkpoint's weights and optimizer state (resume.json's digests equal the checkpoint's files', and differ
  from a fresh model's) and trains to the end.

Measured times are printed as `FAULT <fault> -> <end state> in <s> s, orphans <n>` (run with -s) and collected
in docs/faults.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from launcher.jobfolder.progress import Heartbeat, read_heartbeat, read_metrics
from launcher.jobfolder.records import Cause, State, read_result
from launcher.sync import PAUSE_SYNC_ENV, PAUSED_MARKER, RESUME_MARKER

from .conftest import launch, wait_file, wait_state
from .test_faults import first_metrics_step, name, no_job_processes, report, resumed_from, result_of  # noqa: F401

pytestmark = pytest.mark.cluster

SHORT = ("grpo.max_steps=6", "grpo.save_steps=2")


def paused_in_sync(job, timeout_s: float = 600) -> dict:
    """The pause marker once the trainer waits inside an update; its heartbeat then says weight_sync."""
    marker = job.job_dir / PAUSED_MARKER
    wait_file(marker, timeout_s, lambda p: p.exists() and p.stat().st_size > 0)
    paused = json.loads(marker.read_text())
    # the heartbeat's writer thread wrote "weight_sync begin" before the update's first request
    wait_file(job.attempt / "heartbeat.json", 10,
              lambda f: (read_heartbeat(f.parent) or Heartbeat(None, None, None)).phase == "weight_sync")
    beat = read_heartbeat(job.attempt)
    assert beat.get("stage") == "begin", beat
    assert beat.pid == paused["pid"]
    return paused


def go_on(job) -> None:
    (job.job_dir / RESUME_MARKER).write_text("go on\n")


def server_processes(pid: int) -> list[int]:
    """The server's API process and everything under it (vLLM's engine core and workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def test_server_killed_during_an_update_fails_the_job(cluster_env, smoke_assets, tmp_path, name):
    job = launch(cluster_env, tmp_path, f"name={name}", *SHORT, f"+cluster.env.{PAUSE_SYNC_ENV}=2")
    paused_in_sync(job)
    server = json.loads((job.attempt / "server.json").read_text())
    killed = time.time()
    os.kill(server["pid"], signal.SIGKILL)
    go_on(job)  # the trainer's update goes on into the dead server
    wait_file(job.attempt / "result.json", 120)
    decided = time.time() - killed
    assert wait_state(job.job_id, 120) == "FAILED"
    ended = time.time() - killed
    result = read_result(job.attempt)
    assert result.state is State.FAILED
    # whichever notices first: the supervisor (the server step ended) or the trainer's sync (connection refused)
    assert (result.cause is Cause.SERVER_FAILED and "server exited with code" in result.reason) or \
        (result.cause is Cause.TRAINER_FAILED and "phase 'weight_sync'" in result.reason), result
    assert decided < 30, decided
    left = no_job_processes(job, 60)
    report(f"server killed (SIGKILL) during a weight update ({result.cause.value})", "FAILED", ended, left)
    assert left == []


def test_server_frozen_during_an_update_fails_by_sync_timeout_naming_the_phase(cluster_env, smoke_assets, tmp_path,
                                                                               name):
    # the health grace and the watchdog are far longer: only the sync's own bound can end this job in time
    job = launch(cluster_env, tmp_path, f"name={name}", *SHORT, f"+cluster.env.{PAUSE_SYNC_ENV}=2",
                 "trainer.sync_timeout_s=15", "server.health_grace_s=240", "trainer.watchdog_timeout_s=300")
    paused_in_sync(job)
    server = json.loads((job.attempt / "server.json").read_text())
    frozen_pids = server_processes(server["pid"])
    assert len(frozen_pids) >= 2, frozen_pids  # the API server and vLLM's engine core at least
    frozen = time.time()
    for pid in frozen_pids:
        os.kill(pid, signal.SIGSTOP)
    go_on(job)
    wait_file(job.attempt / "result.json", 120)
    decided = time.time() - frozen
    assert wait_state(job.job_id, 180) == "FAILED"
    ended = time.time() - frozen
    result = read_result(job.attempt)
    assert result.cause is Cause.TRAINER_FAILED, result
    assert "weight sync to the server failed in phase 'weight_sync' before step 2" in result.reason, result.reason
    assert "(trainer.sync_timeout_s=15 s)" in result.reason, result.reason
    assert 15 <= decided <= 15 + 30, decided
    left = no_job_processes(job, 90)
    report("server frozen (SIGSTOP, all its processes) during a weight update, sync_timeout_s=15", "FAILED",
           ended, left)
    assert left == []


def _digests(checkpoint: Path, fresh_model: Path) -> tuple[str, str, str]:
    """(checkpoint weights, checkpoint optimizer state, fresh model weights), digested as resume.json is."""
    import torch
    from transformers import AutoModelForCausalLM

    from launcher.train.rank_record import weights_digest
    from launcher.train.resume_record import optimizer_state_digest

    saved = weights_digest(AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32))
    optimizer = torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=True)
    fresh = weights_digest(AutoModelForCausalLM.from_pretrained(fresh_model, dtype=torch.float32))
    return saved, optimizer_state_digest(optimizer["state"]), fresh


def test_trainer_killed_during_an_update_then_requeued_resumes_on_a_fresh_server(cluster_env, smoke_assets,
                                                                                 tmp_path, name):
    job = launch(cluster_env, tmp_path, f"name={name}", *SHORT, f"+cluster.env.{PAUSE_SYNC_ENV}=4")
    paused = paused_in_sync(job)
    checkpoints = sorted((job.job_dir / "output").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert checkpoints, "no checkpoint before the fault"
    killed = time.time()
    os.kill(paused["pid"], signal.SIGKILL)  # between /start_weight_update and /finish_weight_update
    first = result_of(job, 1, 120)
    assert wait_state(job.job_id, 120) == "FAILED"
    ended = time.time() - killed
    assert first.state is State.FAILED and first.cause is Cause.TRAINER_FAILED, first
    assert "trainer exited with code" in first.reason, first.reason
    left = no_job_processes(job, 60)
    report("trainer killed (SIGKILL) during a weight update", "FAILED", ended, left)
    assert left == []

    requeued = time.time()
    subprocess.run(["scontrol", "requeue", job.job_id], check=True, env=cluster_env, capture_output=True)
    resumed = resumed_from(job, 2)
    assert resumed == int(checkpoints[-1].name.split("-")[1]), (resumed, checkpoints)
    print(f"\nMEASURED scontrol requeue -> attempt 2 resumed from checkpoint-{resumed} in {time.time() - requeued:.1f} s")
    assert wait_state(job.job_id, 600) == "COMPLETED"
    done = time.time() - requeued
    assert first_metrics_step(job, 2) == resumed + 1  # attempt 2 trained on from the checkpoint
    servers = [json.loads((job.job_dir / f"attempt-{n}" / "server.json").read_text()) for n in (1, 2)]
    assert servers[0]["started_at"] != servers[1]["started_at"] or servers[0]["pid"] != servers[1]["pid"]
    log = (job.job_dir / "attempt-2" / "trainer.log").read_text(errors="replace")
    assert "paused after /start_weight_update" not in log  # once per job: attempt 2 synced straight through
    rows = [r for r in read_metrics(job.job_dir / "attempt-2") if r.get("kind") == "train"]
    assert rows and all((r.get("weight_sync_s") or 0) > 0 for r in rows), rows  # it synced at every step

    # resume from the checkpoint's weights and optimizer state, not from a fresh model
    record = json.loads((job.job_dir / "attempt-2" / "resume.json").read_text())
    assert record["step"] == resumed
    saved, optimizer, fresh = _digests(job.job_dir / "output" / f"checkpoint-{resumed}", smoke_assets / "model")
    assert record["weights_sha256"] == saved
    assert saved != fresh  # the smoke reward learns: the weights moved, so this comparison can fail
    assert record["optimizer_tensors"] > 0 and record["optimizer_sha256"] == optimizer
    left = no_job_processes(job, 60)
    report("trainer killed during an update, then scontrol requeue: resumed and COMPLETED", "COMPLETED", done, left)
    assert left == []
