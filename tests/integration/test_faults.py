"""Faults on the real test cluster: frozen components, requeue and resume, walltime, lost nodes, a
restarting slurmctld. Every test ends by checking that no process of the job is left on any node
(`slurm-test-cluster procs` lists all of them).

Each job is a genuine two-node heterogeneous job: the real vLLM CPU server as component 0 and real GRPO
on CPU (the tiny smoke model). The tests of the real job (walltime checkpoint + requeue + resume, a
crashed batch node requeued and resumed, slurmctld restarting during a run) train through the server:
generation on the server, the weights synced to it over gloo at every step (launcher.sync), a resume
continuing from the checkpoint's weights and optimizer state. The preemption resume is in
test_sync_faults.py (one job: a trainer killed mid-update and requeued, then preempted; each attempt's
resumed weights and optimizer state compared with the checkpoint's), an operator's requeue of a running
job in test_multinode_trainer.py (through the server, resumed on both trainer nodes).

The tests of a supervisor decision keep `trainer.use_vllm=false` (generation inside the trainer while
the server runs): a frozen trainer (the watchdog), a frozen server (the health grace and its hang
capture: only the server's own processes matter), a node set DOWN (node_failure, no requeue). There the
trainer need not wait for the server's health before its first step, which is ~40 s per job on this
machine, and the decision does not depend on where generation runs. Stale steps and a permanent sbatch
failure start no training at all.

Measured times are printed as `FAULT <fault> -> <end state> in <s> s, orphans <n>` (run with -s) and
collected in docs/faults.md.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from launcher.jobfolder.layout import attempts
from launcher.jobfolder.progress import read_checkpoint_done, read_heartbeat
from launcher.jobfolder.records import Cause, State, read_result
from launcher.slurm.own_job import OwnJob
from launcher.slurm.states import query_states
from launcher.supervisor.clock import RealClock
from launcher.supervisor.restart import cancel_stale_steps

from .conftest import (CLUSTER, assert_resumed_state, descendants, first_metrics_step, launch,  # noqa: F401
                       no_job_processes, report, result_of, resumed_from, stamp, synced_every_step, wait_file,
                       wait_state, wait_step)

pytestmark = pytest.mark.cluster

# a supervisor decision: a trainer that runs until stopped, generating inside itself
DECISION = ("trainer.use_vllm=false", "grpo.max_steps=10000", "grpo.save_steps=10000")
# the real job: through the server, the weights synced at every step
THROUGH_SERVER = ("grpo.max_steps=10000", "grpo.save_steps=10000")


def test_frozen_trainer_fails_by_watchdog_naming_the_phase(cluster_env, smoke_assets, tmp_path, name):
    job = launch(cluster_env, tmp_path, f"name={name}", *DECISION, "trainer.watchdog_timeout_s=30")
    beat = wait_step(job, 2)
    frozen = time.time()
    os.kill(beat.pid, signal.SIGSTOP)  # the trainer process (global rank 0), on its node
    wait_file(job.attempt / "result.json", 120)
    now = time.time()
    # the watchdog counts again from the server's handover (a trainer may have waited for it), which can come
    # while the trainer is frozen (the overlapped start): the silence runs from the later of the two
    ready = job.attempt / "server_ready.json"
    handed = ready.stat().st_mtime if ready.exists() else 0.0
    silent_since = handed if frozen < handed < now else frozen
    decided = now - silent_since
    assert wait_state(job.job_id, 120) == "FAILED"
    ended = time.time() - silent_since
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
    job = launch(cluster_env, tmp_path, f"name={name}", *DECISION, "server.health_grace_s=15")
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
    # the capture on the server's node: vLLM's engine core, not frozen, answers with its stacks (it is found
    # through its parent: its title wiped the environment the helper step matches); the frozen API server
    # cannot answer, so it is not in the capture (the check tells the processes apart and can fail)
    hang_file = job.attempt / "hang-server.txt"
    answered = re.search(rf"Python stacks of (\d+) process\(es\) and log tails in {re.escape(str(hang_file))}$",
                         result.summary)
    assert answered, result.summary
    text = hang_file.read_text()
    pids = [int(pid) for pid in re.findall(r"^=== stacks/server-\S+-(\d+)\.txt \(what it wrote on the request\)$",
                                           text, re.M)]
    assert len(pids) == int(answered.group(1)) >= 1 and server["pid"] not in pids, (pids, server)
    assert re.search(r"vllm/v1/engine/core.py\", line \d+ in run_busy_loop", text), text[:4000]
    assert re.search(r"asked with: srun --het-group=0 .*--overlap .*: node\d: SIGURG to ([3-9]|[1-9]\d+) process\(es\)",
                     job.supervisor_log()), job.supervisor_log()
    left = no_job_processes(job, 60)
    report("server frozen (SIGSTOP to the API server), engine core's stacks captured", "FAILED", ended, left)
    assert left == []


# ----------------------------------------------------------------------------- walltime


def test_walltime_checkpoints_requeues_then_stops_at_max_requeues(cluster_env, smoke_assets, tmp_path, name):
    """cluster.time=4 min with USR2 120 s before the end: attempt 1 checkpoints and requeues; attempt 2
    resumes from that checkpoint, and at its own USR2 checkpoints again but ends FAILED (max_requeues=1)."""
    job = launch(cluster_env, tmp_path, f"name={name}", *THROUGH_SERVER, "cluster.time=00:04:00",
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
    for attempt in (1, 2):
        synced_every_step(job, attempt)
    assert_resumed_state(job, 2, done["step"], smoke_assets / "model")  # the checkpoint's weights and optimizer
    log = (job.job_dir / "attempt-2" / "supervisor.log").read_text()
    usr2 = next(line for line in log.splitlines() if "USR2: walltime near" in line)
    ended = next(line for line in log.splitlines() if "job FAILED" in line)
    seconds = stamp(ended) - stamp(usr2)
    left = no_job_processes(job, 60)
    report("walltime USR2 with no requeue left", "FAILED", seconds, left)
    assert left == []


# ----------------------------------------------------------------------------- lost nodes


def node_state(node: str, env) -> str:
    out = subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%t"], capture_output=True, text=True, env=env)
    return out.stdout.split()[0] if out.stdout.split() else "unknown"


FINAL = {"CANCELLED", "NODE_FAIL", "FAILED", "COMPLETED", "TIMEOUT"}


def controller_states(job_id: str, env) -> set[str]:
    """The states slurmctld holds for the job's components ({"UNKNOWN"} when it answers nothing)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, env=env)
    return set(re.findall(r"JobState=(\S+)", out.stdout)) or {"UNKNOWN"}


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
    job = launch(cluster_env, tmp_path, f"name={name}", *DECISION, "+trainer.sbatch.exclusive=true")
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
    # the job must not come back: slurmctld itself (not sacct, which lags) holds every component in a final
    # state, from which nothing requeues it; a requeue left standing would keep it PENDING and fail here
    wait_file(job.job_dir, 60, lambda _: controller_states(job.job_id, cluster_env) <= FINAL)
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
    return descendants(roots)


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
    job = launch(cluster_env, tmp_path, f"name={name}", "grpo.max_steps=100000", "grpo.save_steps=3",
                 "+server.sbatch.exclusive=true", "cluster.requeue_on_node_failure=true")
    wait_step(job, 4, attempt=1)
    node = json.loads((job.job_dir / "attempt-1" / "server.json").read_text())["host"]
    crashed = time.time()
    crash(node, job.job_id, cluster_env)
    resumed = resumed_from(job, 2, timeout_s=400)
    back = time.time() - crashed
    assert resumed >= 3 and resumed % 3 == 0
    log = (job.job_dir / "attempt-2" / "supervisor.log").read_text()
    assert re.search(r"attempt 1 ended NODE_FAIL on \S*" + node, log), log
    assert json.loads((job.job_dir / "attempt-2" / "server.json").read_text())["host"] != node
    wait_step(job, resumed + 2, attempt=2)
    assert first_metrics_step(job, 2) == resumed + 1
    synced_every_step(job, 2)  # the new server, on another node, gets the resumed weights at every step
    assert_resumed_state(job, 2, resumed, smoke_assets / "model")
    # Slurm 22.05 sometimes requeues only het component 0 when the batch node fails: the old trainer step
    # then keeps training on its node until the new supervisor cancels it. Either way, no trainer of
    # attempt 1 may still be writing once attempt 2 trains.
    attempt_2_started = stamp(log.splitlines()[0])
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
    job = launch(cluster_env, tmp_path, f"name={name}", "grpo.max_steps=20",
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
    synced_every_step(job, 1)
    log = job.supervisor_log()
    first = stamp(next(line for line in log.splitlines() if "server started: srun" in line))
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
