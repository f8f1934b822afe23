"""The vLLM CPU server with tensor and data parallelism above 1 on the real test cluster.

vLLM's CPU build refuses TP or DP above 1 with its default thread binding on a node of one NUMA node;
the server wrapper writes VLLM_CPU_OMP_THREADS_BIND from the CPUs its step holds
(launcher.components.cpus). A counter-test starts TP=2 with vLLM's own binding (`auto`, set through
server.env) and shows the job fail, so the binding is what makes the layouts start.

The weight sync at TP 1, 2 x DP 1, 2 (worker rank dp_index x TP x PP + tp_rank + 1 in the trainer's
group) is proven by tests/integration/test_sweep.py's report test, whose four points are those layouts,
each training with a sync at every step and TRL's sampling_logp_difference under LOGP_BOUND. Here the
counter-test: TP 2 x DP 2 with the sync switched off passes that bound, so the sweep's check can fail.
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
