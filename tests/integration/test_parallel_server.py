"""The vLLM CPU server with tensor and data parallelism above 1 on the real test cluster.

vLLM's CPU build refuses TP or DP above 1 with its default thread binding on a node of one NUMA node;
the server wrapper writes VLLM_CPU_OMP_THREADS_BIND from the CPUs its step holds
(launcher.components.cpus). A counter-test starts TP=2 with vLLM's own binding (`auto`, set through
server.env) and shows the job fail, so the binding is what makes the layouts start.

One TP 2 x DP 2 job runs a few GRPO steps with the weights synced at every step (launcher.sync's gloo
engine, worker rank dp_index x TP x PP + tp_rank + 1 in the trainer's group): every step syncs to all four
workers and TRL's sampling_logp_difference stays small; the counter-test runs the same layout with the sync
switched off and sees it grow past the same bound. The job also shows the binding in the server's node
record and server.log, COMPLETES, and leaves no process. TP 2 x DP 2 alone stands for TP 2 and DP 2: it has
both a tensor-parallel rank above 0 and a data-parallel index above 0, so every term of the rank formula
is exercised (tests/test_sync_cpu.py pins the formula itself), and a server start on CPU costs
CI a minute per layout.
"""

from __future__ import annotations

import json
import secrets
import subprocess

import pytest

from launcher.jobfolder.progress import read_metrics
from launcher.jobfolder.records import read_result

from .conftest import launch, wait_state
from .test_faults import no_job_processes

pytestmark = pytest.mark.cluster

# CPU layouts: every vLLM worker counts as one "GPU" of the server (gpus_per_node = TP x DP), so the
# per-GPU keys size the server's step: 1 CPU and 3 GB per worker
ON_CPU = ("device=cpu", "trainer.preflight=true", "server.cpus_per_gpu=1", "server.mem_per_gpu=3000M")


@pytest.fixture
def name(cluster_env):
    value = f"tp{secrets.token_hex(3)}"
    yield value
    subprocess.run(["scancel", "-n", value], env=cluster_env, capture_output=True)


def server_record(job) -> dict:
    records = sorted(job.attempt.glob("node-server-*.json"))
    assert len(records) == 1, records
    return json.loads(records[0].read_text())


def check_binding(job, tp: int, dp: int) -> dict:
    """The server wrapper bound TP x DP workers itself, one CPU list each, and said so in server.log."""
    binding = server_record(job)["cpu_binding"]
    cpus = sorted(int(c) for c in binding["cpus"].replace("-", ",").split(","))  # '0-1' or '0,1'
    assert binding["set_by"] == "launcher" and binding["workers"] == tp * dp
    entries = binding["bind"].split("|")
    assert len(entries) == tp * dp  # one CPU list per worker, [DP, PP, TP] order
    assert binding["shared"] == (len(set(range(cpus[0], cpus[-1] + 1))) < tp * dp)
    assert f"VLLM_CPU_OMP_THREADS_BIND={binding['bind']!r} set by launcher" in (job.attempt / "server.log").read_text()
    return binding


def test_tp2_with_vllms_own_binding_fails(cluster_env, smoke_assets, tmp_path, name):
    """The counter-test: the user's VLLM_CPU_OMP_THREADS_BIND is left alone, and vLLM's `auto` refuses
    two workers on the step's one NUMA node, so the job fails and says why."""
    job = launch(cluster_env, tmp_path, f"name={name}", *ON_CPU, "server.tensor_parallel_size=2",
                 "+server.env.VLLM_CPU_OMP_THREADS_BIND=auto")
    assert wait_state(job.job_id, 600) == "FAILED"
    assert server_record(job)["cpu_binding"]["set_by"] == "environment"
    assert "Not enough allowed NUMA nodes" in (job.attempt / "server.log").read_text()
    assert no_job_processes(job, 60) == []


SKIP_SYNC = "DEBUG_SKIP_WEIGHT_SYNC"  # launcher.sync's debug switch: the trainer sends no weights
LOGP_BOUND = 0.05  # TRL's sampling_logp_difference/max: synced 0.005-0.007, not synced above this by step 2


def train_through(cluster_env, tmp_path, name, tp, dp, steps, *overrides, env=None):
    job = launch(dict(cluster_env, **(env or {})), tmp_path, f"name={name}", *ON_CPU[:1], *ON_CPU[2:], f"grpo.max_steps={steps}",
                 "grpo.save_steps=1000", f"server.tensor_parallel_size={tp}", f"server.data_parallel_size={dp}",
                 *overrides)
    state = wait_state(job.job_id, 900)
    assert state == "COMPLETED", (state, read_result(job.attempt), job.supervisor_log())
    train = [r for r in read_metrics(job.attempt) if r.get("kind") == "train"]
    assert [r["step"] for r in train] == list(range(1, steps + 1))
    return job, train


def logp_differences(train: list[dict], which: str = "max") -> list[float]:
    return [r["trl"][f"sampling/sampling_logp_difference/{which}"] for r in train]


def test_training_syncs_weights_to_every_worker(cluster_env, smoke_assets, tmp_path, name):
    """A few GRPO steps through a TP x DP server on CPU, weights synced at every step (launcher.sync).

    The trainer's gloo group has TP x DP + 1 members (GET /get_world_size + 1) and forms only when every
    worker of every engine has joined it (/init_weight_transfer_engine reaches each through vLLM's
    collective RPC); each /update_weights returns once every worker has received the step's buckets. So
    steps that each report a sync, in a job that COMPLETED, mean every worker got every update; and the
    server's generations follow the trainer (TRL's sampling_logp_difference stays small)."""
    tp, dp, steps = 2, 2, 4
    job, train = train_through(cluster_env, tmp_path, name, tp, dp, steps)
    trainer_log = (job.attempt / "trainer.log").read_text()
    assert "weight sync to the server over gloo" in trainer_log and "training finished" in trainer_log
    assert all((r.get("weight_sync_s") or 0) > 0 for r in train), [r.get("weight_sync_s") for r in train]
    differences = logp_differences(train)
    assert max(differences) < LOGP_BOUND, differences  # every engine's generations follow the trainer
    binding = check_binding(job, tp, dp)
    syncs = ", ".join(f"{r['weight_sync_s']:.2f}" for r in train)
    healthy = read_result(job.attempt).timings["server_healthy"]
    print(f"\nMEASURED training TP {tp} x DP {dp}: {steps} steps, weight sync {syncs} s, logp difference max "
          f"{', '.join(f'{d:.3f}' for d in differences)}; server healthy {healthy:.1f} s; bind {binding['bind']} "
          f"over CPUs {binding['cpus']}", flush=True)
    assert no_job_processes(job, 60) == []


def test_without_sync_the_servers_generations_drift(cluster_env, smoke_assets, tmp_path, name):
    """The counter-test: the same TP 2 x DP 2 run with the trainer sending no weights; the server keeps its
    first weights and TRL's logp difference passes the bound the synced run stays under."""
    # through the submitting environment (validation keeps LAUNCHER_* out of trainer.env)
    job, train = train_through(cluster_env, tmp_path, name, 2, 2, 4, env={SKIP_SYNC: "1"})
    differences = logp_differences(train)
    print(f"\nMEASURED training TP 2 x DP 2 without sync: logp difference max "
          f"{', '.join(f'{d:.3f}' for d in differences)}", flush=True)
    assert differences[0] < LOGP_BOUND < max(differences[1:]), differences
    assert no_job_processes(job, 60) == []
