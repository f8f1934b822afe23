"""Faults on the real test cluster: frozen components, requeue and resume, preemption, walltime,
lost nodes, a restarting slurmctld. Every test ends by checking that no process of the job is left on
any node (`slurm-test-cluster procs` lists all of them).

The trainer is real GRPO on CPU (`trainer.use_vllm=false`: generation inside the trainer, the tiny
smoke model) while the real vLLM CPU server runs as component 0, so a job is a genuine two-node
heterogeneous job. Measured times are printed as `FAULT <fault> -> <end state> in <s> s, orphans <n>`
(run with -s) and collected in docs/faults.md.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from launcher.jobfolder.layout import attempts
from launcher.jobfolder.progress import Heartbeat, read_checkpoint_done, read_heartbeat, read_metrics
from launcher.jobfolder.records import Cause, Result, State, read_result
from launcher.slurm.own_job import OwnJob
from launcher.slurm.states import query_states
from launcher.supervisor.clock import RealClock
from launcher.supervisor.restart import cancel_stale_steps

from .conftest import CLUSTER, launch, wait_file, wait_state

pytestmark = pytest.mark.cluster

# a trainer that runs until stopped; checkpoints every few steps so that a requeue has one to resume from
TRAINING = ("trainer.use_vllm=false", "grpo.max_steps=10000", "grpo.save_steps=10000")


@pytest.fixture
def name(cluster_env):
    """A job name of this test's own; any job of that name still queued at the end is cancelled."""
    value = f"ft{secrets.token_hex(3)}"
    yield value
    subprocess.run(["scancel", "-n", value], env=cluster_env, capture_output=True)


def job_processes(job) -> list[str]:
    """Processes of this job on any node (`slurm-test-cluster procs --all` walks every node namespace):
    those whose environment names the job folder (supervisor, srun, wrappers, vLLM and its engine
    processes, the trainer) and the job's slurmstepd. Other tests' jobs sharing the cluster are not ours."""
    out = subprocess.run([str(CLUSTER), "procs", "--all"], capture_output=True, text=True).stdout
    ids = {job.job_id, str(int(job.job_id) + 1)}
    mine = []
    for line in out.splitlines():
        pid, node, cmd = (line.split("\t") + ["", ""])[:3]
        step = re.match(r"slurmstepd: \[(\d+)\.", cmd)
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if (step and step.group(1) in ids) or f"LAUNCHER_JOB_DIR={job.job_dir}\0".encode() in environ:
            mine.append(line)
    return mine


def no_job_processes(job, timeout_s: float = 60) -> list[str]:
    """Wait until no process of the job is left on any node; what is left after timeout_s."""
    deadline = time.monotonic() + timeout_s
    left = job_processes(job)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = job_processes(job)
    return left


def report(fault: str, state: str, seconds: float, orphans: list[str]) -> None:
    print(f"\nFAULT {fault} -> {state} in {seconds:.1f} s, orphans {len(orphans)}", flush=True)


def wait_step(job, at_least: int, timeout_s: float = 900, attempt: int | None = None) -> Heartbeat:
    """The trainer's heartbeat once it has finished optimizer step `at_least` (in `attempt`, default: the latest)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        folder = job.job_dir / f"attempt-{attempt}" if attempt else job.attempt if attempts(job.job_dir) else None
        beat = read_heartbeat(folder) if folder else None
        if beat and beat.get("phase") == "step":
            done = (beat.get("step") or 0) - (0 if beat.get("stage") == "end" else 1)  # "begin" names the next step
            if done >= at_least:
                return beat
        result = read_result(folder) if folder else None
        assert not (result and result.state is State.FAILED), f"the job failed first: {result}"
        time.sleep(0.5)
    raise AssertionError(f"no training step {at_least} in {job.job_dir} after {timeout_s} s")


def test_frozen_trainer_fails_by_watchdog_naming_the_phase(cluster_env, smoke_assets, tmp_path, name):
    job = launch(cluster_env, tmp_path, f"name={name}", *TRAINING, "trainer.watchdog_timeout_s=30")
    beat = wait_step(job, 2)
    frozen = time.time()
    os.kill(beat.pid, signal.SIGSTOP)  # the trainer process (global rank 0), on its node
    wait_file(job.attempt / "result.json", 120)
    decided = time.time() - frozen
    assert wait_state(job.job_id, 120) == "FAILED"
    ended = time.time() - frozen
    result = read_result(job.attempt)
    assert result.cause is Cause.HANG
    assert result.reason.startswith("trainer made no progress for more than trainer.watchdog_timeout_s=30 s; "
                                    "stalled in phase 'step' at step"), result.reason
    assert 30 <= decided <= 30 + 25, decided
    assert "trainer stopped (trainer hung)" in job.supervisor_log()
    left = no_job_processes(job, 60)
    report("trainer frozen (SIGSTOP)", "FAILED", ended, left)
    assert left == []


def test_frozen_server_fails_after_health_grace(cluster_env, smoke_assets, tmp_path, name):
    job = launch(cluster_env, tmp_path, f"name={name}", *TRAINING, "server.health_grace_s=15")
    wait_step(job, 1)
    # the overlapped start: the trainer (use_vllm=false) trains before the server is healthy; freeze a server
    # that has been healthy (its address handed over), not one still starting (startup_timeout_s covers that)
    wait_file(job.attempt / "server_ready.json", 600)
    server = json.loads((job.attempt / "server.json").read_text())
    frozen = time.time()
    os.kill(server["pid"], signal.SIGSTOP)  # vLLM's API server: the port still accepts, nothing answers
    wait_file(job.attempt / "result.json", 120)
    decided = time.time() - frozen
    assert wait_state(job.job_id, 120) == "FAILED"
    ended = time.time() - frozen
    result = read_result(job.attempt)
    assert result.cause is Cause.HANG
    assert result.reason.startswith("server stopped answering /health for more than server.health_grace_s=15 s")
    assert 15 <= decided <= 15 + 25, decided
    left = no_job_processes(job, 60)
    report("server frozen (SIGSTOP)", "FAILED", ended, left)
    assert left == []


# ----------------------------------------------------------------------------- requeue, preemption, walltime


def resumed_from(job, attempt: int, timeout_s: float = 600) -> int:
    """The step of the checkpoint that attempt `attempt`'s trainer resumed from (its trainer.log says so)."""
    log = job.job_dir / f"attempt-{attempt}" / "trainer.log"
    pattern = re.compile(r"resuming from checkpoint \S*checkpoint-(\d+)")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        match = pattern.search(text)
        if match:
            return int(match.group(1))
        assert "no checkpoint in" not in text, f"attempt {attempt} started from step 0:\n{text[-2000:]}"
        time.sleep(0.5)
    raise AssertionError(f"attempt {attempt} did not resume within {timeout_s} s")


def result_of(job, attempt: int, timeout_s: float) -> Result:
    """attempt's result.json once it is final (not the provisional record written when SIGTERM came)."""
    folder = job.job_dir / f"attempt-{attempt}"
    wait_file(folder, timeout_s, lambda f: (read_result(f) is not None and not read_result(f).provisional))
    return read_result(folder)


def first_metrics_step(job, attempt: int) -> int:
    rows = [r for r in read_metrics(job.job_dir / f"attempt-{attempt}") if r.get("kind") == "train"]
    assert rows, f"attempt {attempt} logged no training step"
    return rows[0]["step"]


def result_pickles(job) -> list[Path]:
    return sorted((job.job_dir / "submitit").glob("*_result.pkl"))


def test_requeue_then_preemption_resume_with_a_fresh_server(cluster_env, smoke_assets, tmp_path, name):
    """attempt 1: an operator's `scontrol requeue` (SIGTERM, Slurm requeues) -> attempt 2 resumes from the
    last periodic checkpoint; attempt 2: preempted by an `urgent` job on its trainer node (USR2 with
    GraceTime 10 s) -> checkpoint now, requeue -> attempt 3 resumes from that checkpoint and finishes."""
    # the trainer owns its node, so the preemptor displaces this job only (other tests share the cluster)
    job = launch(cluster_env, tmp_path, f"name={name}", "trainer.use_vllm=false", "grpo.max_steps=90",
                 "grpo.save_steps=5", "cluster.partition=grace", "+trainer.sbatch.exclusive=true",
                 "cluster.checkpoint_timeout_s=20")
    wait_step(job, 7, attempt=1)
    requeued = time.time()
    subprocess.run(["scontrol", "requeue", job.job_id], check=True, env=cluster_env)
    first = result_of(job, 1, 60)
    report("scontrol requeue (SIGTERM)", first.state.value, time.time() - requeued, [])
    assert first.state is State.REQUEUED and first.cause is Cause.REQUEUE, first
    resumed = resumed_from(job, 2)
    restarted = time.time() - requeued
    assert resumed >= 5 and resumed % 5 == 0
    assert result_pickles(job) == []  # attempt 1 left nothing to be read as the job's result
    print(f"\nMEASURED scontrol requeue -> attempt 2 resumed from checkpoint-{resumed} in {restarted:.1f} s")

    beat = wait_step(job, resumed + 3, attempt=2)
    assert first_metrics_step(job, 2) == resumed + 1  # the step count continues
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

    assert wait_state(job.job_id, 900) == "COMPLETED"
    assert first_metrics_step(job, 3) == done["step"] + 1
    servers = [json.loads((job.job_dir / f"attempt-{n}" / "server.json").read_text()) for n in (1, 2, 3)]
    assert len({(s["host"], s["pid"], s["started_at"]) for s in servers}) == 3  # a fresh server every attempt
    for n in (1, 2, 3):
        for log in ("supervisor.log", "server.log", "trainer.log"):
            assert (job.job_dir / f"attempt-{n}" / log).stat().st_size > 0, (n, log)
    assert "restart 2 of job" in (job.job_dir / "attempt-3" / "supervisor.log").read_text()
    assert [p.name for p in result_pickles(job)] == [f"{job.job_id}_0_result.pkl"]
    left = no_job_processes(job, 60)
    report("requeue + preemption, resumed to the end", "COMPLETED", time.time() - preempted, left)
    assert left == []


def test_walltime_checkpoints_requeues_then_stops_at_max_requeues(cluster_env, smoke_assets, tmp_path, name):
    """cluster.time=4 min with USR2 120 s before the end: attempt 1 checkpoints and requeues; attempt 2
    resumes from that checkpoint, and at its own USR2 checkpoints again but ends FAILED (max_requeues=1)."""
    job = launch(cluster_env, tmp_path, f"name={name}", *TRAINING, "cluster.time=00:04:00",
                 "cluster.signal_before_end_s=120", "cluster.max_requeues=1", "cluster.checkpoint_timeout_s=30")
    first = result_of(job, 1, 400)
    assert first.state is State.REQUEUED and first.cause is Cause.WALLTIME, first
    done = read_checkpoint_done(job.job_dir / "attempt-1")
    assert done, "no checkpoint on USR2"
    assert resumed_from(job, 2) == done["step"]
    second = result_of(job, 2, 400)
    assert wait_state(job.job_id, 120) == "FAILED"
    assert second.cause is Cause.MAX_REQUEUES, second
    assert second.reason.startswith("walltime: checkpoint at step") and \
        "not requeued: cluster.max_requeues=1 reached after 1 requeue(s)" in second.reason, second
    assert first_metrics_step(job, 2) == done["step"] + 1
    log = (job.job_dir / "attempt-2" / "supervisor.log").read_text()
    usr2 = next(line for line in log.splitlines() if "USR2: walltime near" in line)
    ended = next(line for line in log.splitlines() if "job FAILED" in line)
    seconds = _stamp(ended) - _stamp(usr2)
    left = no_job_processes(job, 60)
    report("walltime USR2 with no requeue left", "FAILED", seconds, left)
    assert left == []


def _stamp(line: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(line.split()[0]).timestamp()


# ----------------------------------------------------------------------------- lost nodes


def node_state(node: str, env) -> str:
    out = subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%t"], capture_output=True, text=True, env=env)
    return out.stdout.split()[0] if out.stdout.split() else "unknown"


@pytest.fixture
def restore_nodes(cluster_env):
    """Bring every node back after a node fault: restart missing slurmds, resume DOWN/DRAIN nodes."""
    yield
    subprocess.run([str(CLUSTER), "up"], capture_output=True, text=True, env=cluster_env)
    for node in ("node1", "node2", "node3"):
        if node_state(node, cluster_env).startswith(("down", "drain", "drng", "fail")):
            subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], env=cluster_env,
                           capture_output=True)


def test_node_down_ends_the_job_naming_the_node(cluster_env, smoke_assets, tmp_path, name, restore_nodes):
    job = launch(cluster_env, tmp_path, f"name={name}", *TRAINING, "+trainer.sbatch.exclusive=true")
    beat = wait_step(job, 3)
    node = beat.host
    down = time.time()
    subprocess.run(["scontrol", "update", f"nodename={node}", "state=down", "reason=launcher fault test"],
                   check=True, env=cluster_env)
    result = result_of(job, 1, 120)
    decided = time.time() - down
    state = wait_state(job.job_id, 120)
    ended = time.time() - down
    assert result.state is State.FAILED and result.cause is Cause.NODE_FAILURE, result
    # the node is named; the test cluster returns a DOWN node to service at once (ReturnToService=2), so
    # the evidence is srun's "Node failure on <node>" rather than the node's state and reason
    assert result.reason.startswith(f"node failure: {node} ("), result.reason
    assert state in ("CANCELLED", "NODE_FAIL", "FAILED"), state
    time.sleep(35)  # longer than the requeue delay: the job must not come back
    assert [p.name for p in attempts(job.job_dir)] == ["attempt-1"]
    assert query_states([job.job_id])[job.job_id]["State"] in ("CANCELLED", "NODE_FAIL", "FAILED")
    subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], env=cluster_env, capture_output=True)
    left = no_job_processes(job, 60)
    report(f"trainer node set DOWN (decided in {decided:.1f} s)", f"FAILED (sacct {state})", ended, left)
    assert left == []


def _job_processes(node: str, job_ids: set[str], env) -> list[int]:
    """PIDs on `node` of the job's slurmstepd and everything under them."""
    out = subprocess.run([str(CLUSTER), "procs", "--all"], capture_output=True, text=True, env=env).stdout
    roots = []
    for line in out.splitlines():
        pid, where, cmd = (line.split("\t") + ["", ""])[:3]
        match = re.match(r"slurmstepd: \[(\d+)\.", cmd)
        if where == node and match and match.group(1) in job_ids:
            roots.append(int(pid))
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def crash(node: str, job_id: str, env) -> None:
    """A node crash as the rest of the cluster sees it: its slurmd and the job's processes on it die at
    once (the faulted component runs exclusive, so no other job lives there)."""
    slurmd = int((Path(env["LAUNCHER_TEST_CLUSTER_STATE"]) / "pid" / f"slurmd-{node}.pid").read_text())
    victims = _job_processes(node, {job_id, str(int(job_id) + 1)}, env)
    assert victims, f"no process of job {job_id} on {node}"
    for pid in [slurmd, *victims]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_crashed_batch_node_requeues_and_resumes_when_configured(cluster_env, smoke_assets, tmp_path, name,
                                                                 restore_nodes):
    """The server's node (which also runs the supervisor) crashes: Slurm notices after SlurmdTimeout,
    requeues the job; the next supervisor learns from accounting that the node was lost and, since
    cluster.requeue_on_node_failure=true, runs again on the remaining nodes, resuming training."""
    job = launch(cluster_env, tmp_path, f"name={name}", "trainer.use_vllm=false", "grpo.max_steps=100000",
                 "grpo.save_steps=10", "+server.sbatch.exclusive=true", "cluster.requeue_on_node_failure=true")
    wait_step(job, 12, attempt=1)
    node = json.loads((job.job_dir / "attempt-1" / "server.json").read_text())["host"]
    crashed = time.time()
    crash(node, job.job_id, cluster_env)
    resumed = resumed_from(job, 2, timeout_s=400)
    back = time.time() - crashed
    assert resumed >= 10
    log = (job.job_dir / "attempt-2" / "supervisor.log").read_text()
    assert re.search(r"attempt 1 ended NODE_FAIL on \S*" + node, log), log
    assert json.loads((job.job_dir / "attempt-2" / "server.json").read_text())["host"] != node
    wait_step(job, resumed + 2, attempt=2)
    assert first_metrics_step(job, 2) == resumed + 1
    # Slurm 22.05 sometimes requeues only het component 0 when the batch node fails: the old trainer step
    # then keeps training on its node until the new supervisor cancels it. Either way, no trainer of
    # attempt 1 may still be writing once attempt 2 trains.
    attempt_2_started = _stamp(log.splitlines()[0])
    assert read_heartbeat(job.job_dir / "attempt-1").time < attempt_2_started + 5
    # whether Slurm left component 1 running is Slurm's choice: printed here; the cancelling itself is
    # asserted by test_stale_steps_of_an_earlier_run_are_cancelled
    stale = "cancelling steps left from the previous run" in log
    assert not stale or "stale steps gone" in log, log
    print(f"\nMEASURED component 1 left running by Slurm (stale step cancelled): {stale}")
    subprocess.run(["scancel", job.job_id], env=cluster_env, check=True)
    wait_state(job.job_id, 120)
    subprocess.run([str(CLUSTER), "up"], capture_output=True, text=True, env=cluster_env)  # the node returns
    left = no_job_processes(job, 90)
    report("batch/server node crash (slurmd + job processes killed), requeue_on_node_failure=true",
           f"REQUEUED, resumed from checkpoint-{resumed}", back, left)
    assert left == []


STALE_JOB = """#!/bin/bash
#SBATCH --nodes=1
#SBATCH hetjob
#SBATCH --nodes=1
srun --het-group=1 sleep 300 &
sleep 300
"""


def test_stale_steps_of_an_earlier_run_are_cancelled(cluster_env, tmp_path, name):
    """What a requeued attempt does first when Slurm left a step of the earlier run alive (it requeued only
    het component 0 after the batch node failed): the real restart check, against a real het job whose
    component 1 runs a step, cancels it and waits until it is gone."""
    script = tmp_path / "stale.sbatch"
    script.write_text(STALE_JOB)
    out = subprocess.run(["sbatch", "--parsable", "-J", name, "-o", "/dev/null", str(script)], env=cluster_env,
                         capture_output=True, text=True, check=True)
    job = OwnJob(out.stdout.strip().split(";")[0])
    deadline = time.monotonic() + 120
    while not ((info := job.info()) and job.running_steps(info.component_ids)) and time.monotonic() < deadline:
        time.sleep(0.5)
    step = f"{info.component_ids[1]}.0"
    assert job.running_steps(info.component_ids) == [step], "the het job's step never started"
    lines: list[str] = []
    assert cancel_stale_steps(job, RealClock(), lines.append) == [step]
    assert lines == [f"cancelling steps left from the previous run: {step}", "stale steps gone"]
    assert job.running_steps(info.component_ids) == []
    assert "RUNNING" in job.info().states  # the batch step, which is the new attempt's own, is left alone


# ----------------------------------------------------------------------------- a flaky controller


CTLD_OUTAGE_S = 40  # both steps' sruns meet it: they are started again every 5 s until slurmctld is back


def test_controller_restart_and_drain_during_a_run(cluster_env, smoke_assets, tmp_path, name, restore_nodes):
    """slurmctld goes away before the supervisor starts the steps (a cluster.setup line holds the batch
    script at a gate until the outage has begun), so both steps' sruns meet the outage and are started
    again until slurmctld is back; a submission and the jobs CLI run during the outage, and the trainer's
    node is drained mid-run: the job completes; the submission is retried until slurmctld is back."""
    gate = tmp_path / "gate"
    job = launch(cluster_env, tmp_path, f"name={name}", "trainer.use_vllm=false", "grpo.max_steps=60",
                 "grpo.save_steps=1000", f'cluster.setup=["until [ -e {gate} ]; do sleep 0.2; done"]')
    wait_state(job.job_id, 300, want={"RUNNING"})  # the batch script waits at the gate
    stopped = time.time()
    outage = subprocess.Popen([str(CLUSTER), "restart-ctld", "--pause", str(CTLD_OUTAGE_S)], env=cluster_env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    said: list[tuple[float, str]] = []  # (when, line) of the restart's own log: when slurmctld went and came
    reader = threading.Thread(target=lambda: said.extend((time.time(), line) for line in outage.stdout), daemon=True)
    reader.start()
    wait_file(job.job_dir, 60, lambda _: any("slurmctld down" in line for _, line in said))
    gate.touch()  # the supervisor starts both steps now, during the outage
    submit = subprocess.Popen([sys.executable, "-m", "launcher", "+experiment=smoke", "cluster=slurm",
                               f"cluster.job_root={tmp_path / 'held'}", f"name={name}", "+cluster.sbatch.hold=true"],
                              env=cluster_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status = subprocess.run([sys.executable, "-m", "launcher.jobs", "status", str(job.job_dir)], env=cluster_env,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    assert outage.wait(timeout=240) == 0, said
    reader.join(timeout=10)
    out, err = submit.communicate(timeout=300)
    assert submit.returncode == 0 and "submitted job" in out, out + err
    beat = wait_step(job, 5)
    subprocess.run(["scontrol", "update", f"nodename={beat.host}", "state=drain", "reason=launcher fault test"],
                   check=True, env=cluster_env)
    assert wait_state(job.job_id, 600) == "COMPLETED"
    subprocess.run(["scontrol", "update", f"nodename={beat.host}", "state=resume"], env=cluster_env)
    log = job.supervisor_log()
    first = _stamp(next(line for line in log.splitlines() if "server started: srun" in line))
    down = next(t for t, line in said if "slurmctld down" in line)
    back = next(t for t, line in said if "slurmctld started" in line)
    # the path this test exists for: both steps' sruns met the outage and were started again
    assert down - 1 <= first < back, f"steps first started at {first:.0f}, outside the outage {down:.0f}..{back:.0f}"
    for step in ("server", "trainer"):
        assert f"{step} step could not be started (srun: error: " in log, log
        assert log.count(f"{step} started: srun") >= 2, log
    print(f"\nMEASURED ctld outage {down:.0f}..{back:.0f}, steps first started at {first:.0f}, server started "
          f"{log.count('server started: srun')} times, trainer {log.count('trainer started: srun')} times; "
          f"submission retried: {'retrying' in err}")
    left = no_job_processes(job, 60)
    report(f"slurmctld restart ({CTLD_OUTAGE_S} s outage) + drain of the trainer node", "COMPLETED",
           time.time() - stopped, left)
    assert left == []


def test_permanent_sbatch_failure_is_reported_not_retried(cluster_env, smoke_assets, tmp_path, name):
    started = time.time()
    out = subprocess.run([sys.executable, "-m", "launcher", "+experiment=smoke", "cluster=slurm",
                          f"cluster.job_root={tmp_path}", f"name={name}", "+cluster.sbatch.mem=100000000"],
                         env=cluster_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "sbatch failed (permanent)" in out.stderr and "retrying" not in out.stderr, out.stderr
    assert time.time() - started < 30
