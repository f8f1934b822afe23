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
  from a fresh model's) and trains on. The same job is then preempted by an `urgent` job on the trainer's node
  (USR2 with GraceTime 10 s: a checkpoint on request; this was a job of its own in test_faults.py, one job
  now pays for the start once). Every attempt starts a fresh server, resumes from a checkpoint's weights and
  optimizer state (compared as above) and syncs at every step; the last completes.

Measured times are printed as `FAULT <fault> -> <end state> in <s> s, orphans <n>` (run with -s) and collected
in docs/faults.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from launcher.jobfolder.progress import Heartbeat, read_checkpoint_done, read_heartbeat
from launcher.jobfolder.records import Cause, State, read_result
from launcher.sync import PAUSE_SYNC_ENV, PAUSED_MARKER, RESUME_MARKER

from .conftest import (assert_resumed_state, descendants, first_metrics_step, launch, no_job_processes, report,
                       result_of, resumed_from, synced_every_step, wait_file, wait_state, wait_step)

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
    frozen_pids = descendants([server["pid"]])  # the API server and all under it
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


def test_trainer_killed_during_an_update_then_requeued_preempted_resumes_each_time_on_a_fresh_server(
        cluster_env, smoke_assets, tmp_path, name):
    """attempt 1: the trainer killed mid-update -> FAILED; `scontrol requeue` -> attempt 2 resumes from the last
    checkpoint; attempt 2: preempted (grace partition, USR2) -> a checkpoint now, REQUEUED, attempt 3 resumes
    from exactly that checkpoint and completes. (An operator's `scontrol requeue` of a running job, SIGTERM ->
    REQUEUED, then resumed through the server: tests/integration/test_multinode_trainer.py.)"""
    # the trainer owns its node, so the preemptor displaces this job only (other tests share the cluster)
    job = launch(cluster_env, tmp_path, f"name={name}", "grpo.max_steps=12", "grpo.save_steps=2",
                 f"+cluster.env.{PAUSE_SYNC_ENV}=4", "cluster.partition=grace", "+trainer.sbatch.exclusive=true",
                 "cluster.checkpoint_timeout_s=20")
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

    # 1 -> 2: the failed job requeued by hand
    requeued = time.time()
    subprocess.run(["scontrol", "requeue", job.job_id], check=True, env=cluster_env, capture_output=True)
    resumed = resumed_from(job, 2)
    assert resumed == int(checkpoints[-1].name.split("-")[1]), (resumed, checkpoints)
    print(f"\nMEASURED scontrol requeue -> attempt 2 resumed from checkpoint-{resumed} in {time.time() - requeued:.1f} s")
    log = (job.job_dir / "attempt-2" / "trainer.log").read_text(errors="replace")
    assert "paused after /start_weight_update" not in log  # once per job: attempt 2 synced straight through
    assert result_pickles(job) == []  # no attempt so far left anything to be read as the job's result

    # 2 -> 3: preempted by an urgent job on the trainer's node: a checkpoint on request, then the requeue
    beat = wait_step(job, resumed + 2, attempt=2)
    preempted = time.time()
    subprocess.run(["sbatch", "-p", "urgent", "-w", beat.host, "-J", name, "-o", "/dev/null", "--wrap", "sleep 45"],
                   check=True, env=cluster_env, capture_output=True)
    second = result_of(job, 2, 120)
    decided = time.time() - preempted
    assert second.state is State.REQUEUED and second.cause is Cause.PREEMPTION, second
    done = read_checkpoint_done(job.job_dir / "attempt-2")
    assert done and "checkpoint at step" in second.reason, second
    report("preemption (grace partition, USR2)", "REQUEUED", decided, [])
    assert resumed_from(job, 3) == done["step"]  # the checkpoint taken for the preemption
    assert wait_state(job.job_id, 600) == "COMPLETED"
    finished = time.time() - preempted

    # every attempt after the first: a fresh server, the checkpoint's weights and optimizer state, synced
    for attempt, step in ((2, resumed), (3, done["step"])):
        assert first_metrics_step(job, attempt) == step + 1, attempt
        synced_every_step(job, attempt)
        assert_resumed_state(job, attempt, step, smoke_assets / "model")
    servers = [json.loads((job.job_dir / f"attempt-{n}" / "server.json").read_text()) for n in (1, 2, 3)]
    assert len({(s["host"], s["pid"], s["started_at"]) for s in servers}) == 3  # a fresh server every attempt
    for n in (1, 2, 3):
        for log_name in ("supervisor.log", "server.log", "trainer.log"):
            assert (job.job_dir / f"attempt-{n}" / log_name).stat().st_size > 0, (n, log_name)
    assert "restart 2 of job" in (job.job_dir / "attempt-3" / "supervisor.log").read_text()
    assert [p.name for p in result_pickles(job)] == [f"{job.job_id}_0_result.pkl"]
    left = no_job_processes(job, 60)
    report("trainer killed mid-update, requeue, preemption: resumed each time, COMPLETED", "COMPLETED",
           finished, left)
    assert left == []


def result_pickles(job) -> list:
    return sorted((job.job_dir / "submitit").glob("*_result.pkl"))
