"""A real cluster's setup on the test cluster: cores confined per step (TaskPlugin=task/cgroup,task/affinity,
ConstrainCores=yes: the default of scripts/slurm-test-cluster, as on most GPU clusters) and a second network
(ib0 on its own subnet in every node).

One het job proves several things at once: each component asks for its GPU share of a node's CPUs and
sacct's AllocTRES shows it (more than one CPU per component), the processes see exactly the CPUs the plan
says (node records, versions.json), the trainer's rank gets them as its threads, the server binds and
publishes its ib0 address and the trainer reaches it there with VLLM_HOST_IP/NCCL/Gloo on ib0, and the job
COMPLETES. A second, tiny job names an interface the nodes lack and must end in seconds naming theirs.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from launcher.jobfolder.layout import latest_attempt
from launcher.plan.plan import Plan

from .conftest import STATE, STEPS, launch, wait_no_orphans, wait_state

pytestmark = pytest.mark.cluster


def fabric_addresses() -> dict[str, str]:
    """nodeK -> its ib0 address, from the cluster's hosts file ("10.213.1.11 node1-ib0")."""
    hosts = (STATE / "etc" / "hosts").read_text()
    return {m.group(2): m.group(1) for m in re.finditer(r"^(\S+) (node\d+)-ib0$", hosts, re.M)}


def alloc_tres(env: dict, job_id: str, timeout_s: float = 60) -> dict[str, str]:
    """{"<id>+0": "billing=2,cpu=2,...", "<id>+1": ...} once sacct lists both components (it lags)."""
    deadline = time.monotonic() + timeout_s
    rows: dict[str, str] = {}
    while time.monotonic() < deadline:
        out = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "JobID,AllocTRES"], env=env,
                             capture_output=True, text=True)
        rows = dict(line.split("|", 1) for line in out.stdout.splitlines() if "|" in line)
        if all(rows.get(f"{job_id}+{i}", "").count("cpu=") for i in (0, 1)):
            return rows
        time.sleep(1)
    raise AssertionError(f"sacct has no AllocTRES for both components of {job_id}: {rows}")


@pytest.fixture(scope="module")
def confining(cluster_env):
    out = subprocess.run(["scontrol", "show", "config"], env=cluster_env, capture_output=True, text=True).stdout
    plugin = re.search(r"^TaskPlugin\s*=\s*(\S+)", out, re.M)
    if not plugin or "task/cgroup" not in plugin.group(1) or not fabric_addresses():
        pytest.fail("the test cluster does not confine cores or has no ib0 network (started before they were its "
                    "defaults): restart it with scripts/slurm-test-cluster down && scripts/slurm-test-cluster up")
    return cluster_env


def test_confined_het_job_gets_its_cpus_and_uses_the_chosen_interface(confining, smoke_assets, tmp_path):
    bad = launch(confining, tmp_path / "bad", "name=nosuchif", "cluster.network_interface=hsn0")
    job = launch(confining, tmp_path, "cluster.network_interface=ib0")
    plan = Plan.from_json((job.job_dir / "plan.json").read_text())
    planned = {c.name: c.resources.cpus for c in plan.components}
    assert planned == {"server": 2, "trainer": 2}  # 4 CPUs x 1 of 2 GPUs, from sinfo
    assert (job.job_dir / "plan.txt").read_text().count("asks: CPUs 2 of 4 CPUs: 1 of 2 GPUs;") == 2

    # a name the nodes lack: the first step wrapper to look ends the job at once, naming the node's interfaces
    assert wait_state(bad.job_id, 120) == "FAILED"
    reason = bad.result()["reason"]
    assert "cluster.network_interface=hsn0: node" in reason and "(it has: lo, eth0, ib0)" in reason, reason
    ended = re.search(r"^\S+ \+\s*([\d.]+)s job FAILED: (server|trainer) exited with code 2", bad.supervisor_log(),
                      re.M)
    assert ended and float(ended.group(1)) < 10, bad.supervisor_log()  # seconds after the supervisor started

    assert wait_state(job.job_id, 600) == "COMPLETED"
    tres = alloc_tres(confining, job.job_id)
    print(f"\nMEASURED AllocTRES {tres}")
    for i, name in enumerate(("server", "trainer")):
        cpus = int(re.search(r"cpu=(\d+)", tres[f"{job.job_id}+{i}"]).group(1))
        assert cpus == planned[name] > 1, tres
    attempt = latest_attempt(job.job_dir)
    fabric = fabric_addresses()
    server = json.loads((attempt / "server.json").read_text())
    node = {n: json.loads(next(attempt.glob(f"node-{n}-*.json")).read_text()) for n in ("server", "trainer")}
    print(f"MEASURED nproc seen: server {node['server']['cpus_seen']}, trainer {node['trainer']['cpus_seen']}")
    for name in ("server", "trainer"):
        assert node[name]["cpus_seen"] == node[name]["cpus_planned"] == planned[name], node[name]
        assert node[name]["nccl_async_error_handling"] == "1" and node[name]["open_files"]["after"] >= 1024
        assert node[name]["network"] == {"VLLM_HOST_IP": fabric[node[name]["host"]], "NCCL_SOCKET_IFNAME": "ib0",
                                         "GLOO_SOCKET_IFNAME": "ib0"}
    # the trainer process itself: the step's CPUs, all of them its threads (one local rank)
    versions = json.loads((attempt / "versions.json").read_text())
    assert versions["cpus_seen"] == planned["trainer"] and versions["threads"]["OMP_NUM_THREADS"] == "2"
    # the server listens on ib0 and the trainer, on another node, generated through that address
    assert server["address"] == fabric[server["host"]] and server["url"].startswith(f"http://{server['address']}:")
    assert "server healthy after" in job.supervisor_log() and server["url"] in job.supervisor_log()
    assert node["trainer"]["host"] != server["host"]
    # the weights went node to node over ib0 too (gloo binds the address that routes to trainer rank 0)
    rows = [json.loads(line) for line in (attempt / "metrics.jsonl").read_text().splitlines()]
    assert [r["weight_sync_s"] > 0 for r in rows if r.get("kind") == "train"] == [True] * STEPS
    assert wait_no_orphans() == []
