"""The vLLM CPU server with tensor and data parallelism above 1 on the real test cluster.

vLLM's CPU build refuses TP or DP above 1 with its default thread binding on a node of one NUMA node;
the server wrapper writes VLLM_CPU_OMP_THREADS_BIND from the CPUs its step holds
(launcher.components.cpus). One smoke job per layout (server on CPU, the trainer's preflight asks the
server's world size through TRL's client, `GET /get_world_size`): the server reaches /health, reports
TP x DP workers, the job COMPLETES, the binding is in the server's node record, and no process of the
job is left. Server start times are printed (`MEASURED layout ...`, run with -s). A counter-test
starts TP=2 with vLLM's own binding (`auto`, set through server.env) and shows the job fail, so the
binding is what makes the layouts start.
"""

from __future__ import annotations

import json
import secrets
import subprocess

import pytest

from launcher.jobfolder.records import State, read_result

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


@pytest.mark.parametrize("tp,dp", [(2, 1), (1, 2), (2, 2)], ids=["tp2", "dp2", "tp2xdp2"])
def test_server_serves_with_tp_and_dp_above_one(cluster_env, smoke_assets, tmp_path, name, tp, dp):
    job = launch(cluster_env, tmp_path, f"name={name}", *ON_CPU,
                 f"server.tensor_parallel_size={tp}", f"server.data_parallel_size={dp}")
    state = wait_state(job.job_id, 600)
    result = read_result(job.attempt)
    assert state == "COMPLETED" and result.state is State.COMPLETED, (state, result, job.supervisor_log())
    preflight = json.loads((job.attempt / "preflight.json").read_text())
    assert preflight["server_world_size"] == tp * dp  # GET /get_world_size: every worker of every engine
    assert preflight["completions"] > 0
    binding = server_record(job)["cpu_binding"]
    cpus = sorted(int(c) for c in binding["cpus"].replace("-", ",").split(","))  # '0-1' or '0,1'
    assert binding["set_by"] == "launcher" and binding["workers"] == tp * dp
    entries = binding["bind"].split("|")
    assert len(entries) == tp * dp  # one CPU list per worker, [DP, PP, TP] order
    assert binding["shared"] == (len(set(range(cpus[0], cpus[-1] + 1))) < tp * dp)
    assert f"VLLM_CPU_OMP_THREADS_BIND={binding['bind']!r} set by launcher" in (job.attempt / "server.log").read_text()
    healthy = result.timings["server_healthy"]
    print(f"\nMEASURED layout TP {tp} x DP {dp}: server healthy {healthy:.1f} s after the attempt began; "
          f"bind {binding['bind']} over CPUs {binding['cpus']}; {preflight['tokens_per_s']:.0f} tokens/s", flush=True)
    assert no_job_processes(job, 60) == []


def test_tp2_with_vllms_own_binding_fails(cluster_env, smoke_assets, tmp_path, name):
    """The counter-test: the user's VLLM_CPU_OMP_THREADS_BIND is left alone, and vLLM's `auto` refuses
    two workers on the step's one NUMA node, so the job fails and says why."""
    job = launch(cluster_env, tmp_path, f"name={name}", *ON_CPU, "server.tensor_parallel_size=2",
                 "+server.env.VLLM_CPU_OMP_THREADS_BIND=auto")
    assert wait_state(job.job_id, 600) == "FAILED"
    assert server_record(job)["cpu_binding"]["set_by"] == "environment"
    assert "Not enough allowed NUMA nodes" in (job.attempt / "server.log").read_text()
    assert no_job_processes(job, 60) == []
