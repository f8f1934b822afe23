"""What the step wrappers do on each node before they exec: the hygiene (NCCL async errors, open files,
stale shared memory), the trainer ranks' threads, and the address and variables that follow
cluster.network_interface (the real interfaces of this machine; the test cluster's ib0 in the integration
tests)."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time

import pytest

from conftest import compose
from launcher.components import hygiene, network, trainer_step
from launcher.components.cpus import thread_env, threads_per_rank
from launcher.node import NoSuchInterface, interface_address, interface_names
from launcher.plan.build import build_plan
from launcher.validate.problems import Facts

FACTS = Facts(partitions={"debug": {"gpus_per_node": 2, "nodes": 3, "max_time_s": None, "cpus_per_node": 4,
                                    "mem_mb_per_node": 16000}}, default_partition="debug")


def test_ranks_share_the_step_cpus_unless_the_user_set_threads():
    assert [threads_per_rank(c, r) for c, r in ((16, 4), (2, 1), (3, 8), (8, 0))] == [4, 2, 1, 8]
    env = {"MKL_NUM_THREADS": "7"}
    assert thread_env(16, 4, env) == {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "7", "OPENBLAS_NUM_THREADS": "4"}


def test_stale_shm_is_this_users_recent_unused_vllm_files_only():
    E = hygiene.ShmEntry
    entries = [E("psm_old", 0, 50.0), E("psm_dead", 0, 150.0), E("psm_live", 0, 150.0), E("vllm_ec_1.mmap", 0, 200.0),
               E("sem.mp-abc", 0, 160.0), E("psm_other_user", 1000, 150.0), E("nccl-x", 0, 150.0)]
    assert hygiene.stale_shm(entries, uid=0, since=100.0, in_use={"psm_live"}) == \
        ["psm_dead", "sem.mp-abc", "vllm_ec_1.mmap"]


def test_clean_stale_shm_keeps_what_a_live_process_maps(tmp_path):
    dead, live, old = tmp_path / "psm_dead", tmp_path / "psm_live", tmp_path / "psm_old"
    for path in (dead, live, old):
        path.write_bytes(b"\0" * 4096)
    os.utime(old, (1, 1))
    holder = subprocess.Popen([sys.executable, "-c", "import mmap,sys; f=open(sys.argv[1],'r+b'); "
                               "m=mmap.mmap(f.fileno(), 4096); f.close(); print('mapped', flush=True); sys.stdin.read()",
                               str(live)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "mapped"  # the mapping exists (its fd is closed)
        assert hygiene.clean_stale_shm(since=time.time() - 60, shm_dir=tmp_path) == ["psm_dead"]
        assert live.exists() and old.exists() and not dead.exists()
    finally:
        holder.stdin.close()
        holder.wait(10)


def test_open_file_limit_goes_to_the_hard_limit_capped():
    inf = resource.RLIM_INFINITY
    assert hygiene.open_files_target(1024, 524288) == 524288
    assert hygiene.open_files_target(1024, inf) == hygiene.NOFILE_CAP
    assert hygiene.open_files_target(4096, 2048) == 4096  # never lowered
    env: dict[str, str] = {}
    record = hygiene.prepare_node(env, None)
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1" and record["stale_shm_removed"] == []
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == record["open_files"]["after"] >= \
        record["open_files"]["before"]


def test_interface_address_names_the_interfaces_a_node_has():
    assert "lo" in interface_names() and interface_address("lo") == "127.0.0.1"
    with pytest.raises(NoSuchInterface) as info:
        interface_address("hsn9")
    assert str(info.value) == (f"cluster.network_interface=hsn9: {socket.gethostname()} has no interface hsn9 "
                               f"(it has: {', '.join(interface_names())})")


def test_variables_follow_the_interface_only_when_one_is_chosen():
    plain = build_plan(compose("+experiment=smoke", "cluster=slurm"), FACTS)
    assert network.network_env(plain, "10.0.0.1", {}) == {}
    chosen = build_plan(compose("+experiment=smoke", "cluster=slurm", "cluster.network_interface=lo"), FACTS)
    env = {"NCCL_SOCKET_IFNAME": "^docker"}
    assert network.step_address(chosen) == "127.0.0.1"
    assert network.network_env(chosen, "127.0.0.1", env) == {
        "VLLM_HOST_IP": "127.0.0.1", "NCCL_SOCKET_IFNAME": "^docker", "GLOO_SOCKET_IFNAME": "lo"}
    assert "bind the address of lo" in str(chosen)


def two_trainer_nodes(monkeypatch, *overrides: str):
    """The smoke job's plan with the trainer on node2 and node3 (job 77), seen from trainer node 0."""
    monkeypatch.setenv("SLURM_JOB_NODELIST", "node[2-3]")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.delenv("LAUNCHER_BACKEND", raising=False)
    monkeypatch.setenv("SLURM_NODEID", "0")
    return build_plan(compose("+experiment=smoke", "cluster=slurm", "trainer.nodes=2", *overrides), FACTS)


def test_trainer_nodes_meet_at_node_0s_address_on_the_interface(tmp_path, monkeypatch):
    plan = two_trainer_nodes(monkeypatch, "cluster.network_interface=ib0")
    with socket.socket() as taken:  # the port the job id would have given: another job holds it
        taken.bind(("127.0.0.1", 20077))
        taken.listen()
        rank, address, port = trainer_step.rendezvous(plan, "127.0.0.1", tmp_path)
    assert (rank, address) == (0, "127.0.0.1") and port != 20077
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # node 0 chose a port free on its address
    assert json.loads((tmp_path / "rendezvous.json").read_text()) == {"address": "127.0.0.1", "port": port}
    monkeypatch.setenv("SLURM_NODEID", "1")  # another node: node 0's fabric address and port, not its name's
    assert trainer_step.rendezvous(plan, "10.213.1.13", tmp_path) == (1, "127.0.0.1", port)
    argv = trainer_step.train_argv(plan, "10.213.1.13", tmp_path)  # accelerate's command on that node
    assert argv[argv.index("--main_process_ip") + 1] == "127.0.0.1" and argv[argv.index("--machine_rank") + 1] == "1"
    assert argv[argv.index("--main_process_port") + 1] == str(port)
    (tmp_path / "rendezvous.json").unlink()
    with pytest.raises(TimeoutError, match="did not publish its address"):
        network.wait_rendezvous(tmp_path, timeout_s=0.2)


def test_trainer_nodes_meet_through_the_record_without_an_interface(tmp_path, monkeypatch):
    """Without cluster.network_interface node 0 still publishes: its name's address and a port of its choice
    (trainer.main_process_port when set), which the other nodes read instead of guessing."""
    plan = two_trainer_nodes(monkeypatch, "trainer.main_process_port=29555")
    assert trainer_step.rendezvous(plan, "10.213.0.12", tmp_path) == (0, "10.213.0.12", 29555)
    monkeypatch.setenv("SLURM_NODEID", "1")
    assert trainer_step.rendezvous(plan, "10.213.0.13", tmp_path) == (1, "10.213.0.12", 29555)
    monkeypatch.setenv("SLURM_NODEID", "0")  # run by hand (no attempt folder): the port the job id gives
    plain = build_plan(compose("+experiment=smoke", "cluster=slurm", "trainer.nodes=2"), FACTS)
    assert trainer_step.rendezvous(plain, "10.213.0.12", None) == (0, "10.213.0.12", 20077)
