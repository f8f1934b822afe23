"""A trainer over two nodes with two CPU processes each, on the real test cluster: one gloo world of four
ranks under `accelerate launch` (the command GPUs get), over the second network (cluster.network_interface
=ib0), generating through the vLLM CPU server with rank 0 alone syncing the weights to it, requeued by
an operator mid-run and resumed from its checkpoint on both nodes with a fresh server. (One job: a second
one for the server path repeated this one's start for two more minutes of CI.)

The smoke experiment's reward varies within a group (launcher.train.smoke_reward), so gradients are
non-zero and the weights move: identical digests across ranks then mean the ranks trained together, not
that nothing changed (the test checks the final weights differ from the initial model). Every rank's own record
(attempt-N/ranks/rank-<N>.json, launcher.train.rank_record) says where it ran and which steps it took.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from launcher.jobfolder.progress import read_metrics
from launcher.jobfolder.records import Cause, State

from .conftest import launch, wait_file, wait_state
from .test_faults import no_job_processes, report, result_of, resumed_from, wait_step

pytestmark = pytest.mark.cluster

MAX_STEPS, SAVE_STEPS = 10, 3
LOGP_BOUND = 0.05  # TRL's sampling_logp_difference/max, as tests/integration/test_parallel_server.py bounds it
# 4 ranks x 2 completions of 8 tokens a step; the smoke experiment's reward (launcher.train.smoke_reward)
SMALL = ("grpo.num_generations=2", "grpo.per_device_train_batch_size=2", "grpo.max_completion_length=8")


def digest_of(folder) -> str:
    """The weights digest of a saved model, as the ranks compute theirs (float32, as the trainer loads it)."""
    import torch
    from transformers import AutoModelForCausalLM

    from launcher.train.rank_record import weights_digest

    return weights_digest(AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32))


def test_two_nodes_two_cpu_processes_each_train_as_one_job_and_resume(cluster_env, smoke_assets, tmp_path):
    name = f"mn{int(time.time()) % 100000}"
    job = launch(cluster_env, tmp_path / "jobs", f"name={name}", "trainer.nodes=2",
                 "trainer.gpus_per_node=2", *SMALL, f"grpo.max_steps={MAX_STEPS}", f"grpo.save_steps={SAVE_STEPS}",
                 "cluster.network_interface=ib0")
    try:
        wait_step(job, SAVE_STEPS + 1, attempt=1, timeout_s=600)
        requeued = time.time()
        subprocess.run(["scontrol", "requeue", job.job_id], check=True, env=cluster_env)
        first = result_of(job, 1, 90)
        assert first.state is State.REQUEUED and first.cause is Cause.REQUEUE, first
        resumed = resumed_from(job, 2)
        print(f"\nMEASURED 2x2 CPU trainer: scontrol requeue -> attempt 2 resumed from checkpoint-{resumed} "
              f"in {time.time() - requeued:.1f} s")
        assert resumed >= SAVE_STEPS and resumed % SAVE_STEPS == 0
        assert wait_state(job.job_id, 900) == "COMPLETED"
    finally:
        subprocess.run(["scancel", "-n", name], env=cluster_env, capture_output=True)

    attempt = job.job_dir / "attempt-2"
    log = (attempt / "trainer.log").read_text(errors="replace")
    assert "training on CPU: 4 processes (2 per node on 2 node(s)), gloo" in log, log[-3000:]
    assert "node 0 only" not in log
    assert "--num_machines 2 --num_processes 4" in log and "--mixed_precision no" in log
    rendezvous = json.loads((attempt / "rendezvous.json").read_text())
    assert f"--main_process_port {rendezvous['port']}" in log  # node 0's published, free port for both nodes
    nodes = [json.loads(p.read_text()) for p in sorted(attempt.glob("node-trainer-*.json"))]
    assert len(nodes) == 2 and all(n["network"]["GLOO_SOCKET_IFNAME"] == "ib0" for n in nodes), nodes
    assert rendezvous["address"] in {n["address"] for n in nodes}  # node 0's ib0 address, not its name's
    assert f"--main_process_ip {rendezvous['address']}" in log

    wait_file(attempt / "ranks" / "rank-3.json", 30)
    records = [json.loads((attempt / "ranks" / f"rank-{r}.json").read_text()) for r in range(4)]
    hosts = {rec["host"] for rec in records}
    assert len(hosts) == 2, records  # the world spans both trainer nodes ...
    assert sorted(rec["local_rank"] for rec in records) == [0, 0, 1, 1]  # ... two processes on each
    assert all(rec["world_size"] == 4 for rec in records)
    steps = list(range(resumed + 1, MAX_STEPS + 1))
    for rec in records:  # every rank took part in every step after the resume, and started where it resumed
        assert rec["steps"] == steps and rec["started_at"] == resumed, rec
    digests = {rec["weights_sha256"] for rec in records}
    assert len(digests) == 1 and None not in digests, records  # the same weights on all four ranks
    final = digests.pop()
    assert digest_of(job.job_dir / "output") == final  # the saved model is those weights
    assert digest_of(smoke_assets / "model") != final  # and they moved: the ranks trained, not idled

    # through the resumed attempt's fresh server: rank 0 alone joined the weight-sync group (one
    # /init_weight_transfer_engine, not four) and synced at every step; the server's generations followed
    train = [r for r in read_metrics(attempt) if r.get("kind") == "train"]
    assert [r["step"] for r in train] == steps and all((r.get("weight_sync_s") or 0) > 0 for r in train), train
    differences = [r["trl"]["sampling/sampling_logp_difference/max"] for r in train]
    assert max(differences) < LOGP_BOUND, differences
    joins = (attempt / "server.log").read_text(errors="replace").count("POST /init_weight_transfer_engine")
    assert joins == 1, joins

    left = no_job_processes(job, 60)
    report("2 nodes x 2 CPU processes, scontrol requeue, resumed on both nodes", "COMPLETED",
           time.time() - requeued, left)
    assert left == []

