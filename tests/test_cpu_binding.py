"""The vLLM CPU server's thread binding (launcher.components.cpus): the split of the step's CPUs across TP x
DP x PP workers, the VLLM_CPU_OMP_THREADS_BIND text vLLM parses, and when the launcher leaves it alone."""

from __future__ import annotations

import os

import pytest

from conftest import compose
from launcher.components.cpus import (BIND_VAR, ServerLayout, bind_value, describe_binding, id_list, server_binding,
                                      split_cpus)
from launcher.plan.build import build_plan
from launcher.validate.cpu_server import check_cpu_server
from launcher.validate.facts import parse_sinfo
from launcher.validate.problems import Facts, InvalidConfig


def own_cores(cpu: int) -> tuple[int, int]:
    return 0, cpu


def smt_pairs(cpu: int) -> tuple[int, int]:
    """8 logical CPUs over 4 cores, siblings n and n+4 (Linux's usual x86 numbering)."""
    return 0, cpu % 4


def test_whole_cores_per_worker_with_one_logical_cpu_each():
    assert split_cpus(range(8), 2, smt_pairs) == [[0, 1], [2, 3]]  # siblings 4-7 left out
    assert split_cpus(range(8), 4, smt_pairs) == [[0], [1], [2], [3]]
    assert split_cpus([0, 1, 2, 3, 4], 2, own_cores) == [[0, 1, 2], [3, 4]]  # the first runs one longer


def test_fewer_cores_than_workers_splits_logical_cpus_keeping_siblings_together():
    # 2 cores x 2 threads for 4 workers: one logical CPU each; for 3: siblings of core 0 together
    assert split_cpus(range(4), 4, lambda c: (0, c % 2)) == [[0], [2], [1], [3]]
    assert split_cpus(range(4), 3, lambda c: (0, c % 2)) == [[0, 2], [1], [3]]


def test_fewer_cpus_than_workers_share_round_robin():
    assert split_cpus([0, 1], 4, own_cores) == [[0], [1], [0], [1]]
    assert split_cpus([5], 2, own_cores) == [[5], [5]]


def test_step_cpus_are_used_as_given_not_from_zero():
    # a step confined to CPUs 8-11 (task/cgroup) binds there, in order, duplicates ignored
    assert bind_value(split_cpus([11, 9, 8, 10, 9], 2, own_cores)) == "8-9|10-11"


def test_bad_splits_are_refused():
    with pytest.raises(ValueError, match="workers"):
        split_cpus([0, 1], 0, own_cores)
    with pytest.raises(ValueError, match="no CPUs"):
        split_cpus([], 2, own_cores)


def test_id_lists_as_vllm_parses_them():
    assert id_list([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and id_list([3]) == "3"
    assert bind_value([[0, 1], [2, 3], [4], [6, 7]]) == "0-1|2-3|4|6-7"


def test_layout_from_the_server_command():
    execs = ["trl", "vllm-serve", "--tensor_parallel_size", "2", "--data_parallel_size", "2",
             "--pipeline-parallel-size=2"]
    layout = ServerLayout.of(execs)
    assert (layout.tensor_parallel, layout.data_parallel, layout.pipeline_parallel, layout.workers) == (2, 2, 2, 8)
    assert ServerLayout.of(["trl", "vllm-serve"]).workers == 1


def test_launcher_sets_the_binding_for_more_than_one_worker():
    env: dict[str, str] = {}
    record = server_binding(ServerLayout(2, 2), env, cpus=[0, 1, 2, 3])
    assert env[BIND_VAR] == record["bind"] and record["set_by"] == "launcher" and record["workers"] == 4
    assert len(env[BIND_VAR].split("|")) == 4 and record["cpus"] == "0-3" and record["shared"] is False
    shared = server_binding(ServerLayout(2, 2), {}, cpus=[0, 1])
    assert shared["bind"] == "0|1|0|1" and shared["shared"] is True
    assert "they share 0-1" in describe_binding(shared)


def test_one_worker_keeps_vllms_own_binding():
    env: dict[str, str] = {}
    record = server_binding(ServerLayout(), env, cpus=[0, 1])
    assert BIND_VAR not in env and record["bind"] == "auto" and record["set_by"] == "vllm"


def test_the_users_binding_is_left_alone():
    env = {BIND_VAR: "nobind"}
    record = server_binding(ServerLayout(2, 1), env, cpus=[0, 1])
    assert env[BIND_VAR] == "nobind" and record["set_by"] == "environment" and record["shared"] is False
    # counter-check: the same call without the user's value writes the launcher's
    env = {}
    assert server_binding(ServerLayout(2, 1), env, cpus=[0, 1])["set_by"] == "launcher" and env[BIND_VAR] == "0|1"


def test_the_affinity_is_read_when_no_cpus_are_given():
    env: dict[str, str] = {}
    record = server_binding(ServerLayout(2, 1), env)
    assert record["cpus"] == id_list(sorted(os.sched_getaffinity(0)))


# before queueing: each vLLM CPU worker counts as one of the server's GPUs (the test cluster's sinfo line)
DEBUG = Facts(partitions=parse_sinfo("debug|gpu:2|3|infinite|debug*|4|16000\n")[0], default_partition="debug")
TP2XDP2 = ("+experiment=smoke", "cluster=slurm", "device=cpu", "server.tensor_parallel_size=2",
           "server.data_parallel_size=2")


def cpu_problems(*overrides: str) -> list[str]:
    return [f"{p.severity}: {p}" for p in check_cpu_server(compose(*overrides), DEBUG)]


def test_a_cpu_server_asking_more_than_the_node_has_is_refused_naming_the_keys():
    problems = cpu_problems(*TP2XDP2)
    assert problems == [
        "error: server.tensor_parallel_size, server.data_parallel_size, server.cpus_per_gpu: TP x DP = 2 x 2 = 4 "
        "vLLM CPU worker(s), each counted as one of the server's GPUs, ask for 8 CPUs per node (8 of 4 CPUs: 4 of "
        "2 GPUs), but nodes of partition 'debug' have 4: set server.cpus_per_gpu=1 (CPUs per worker)",
        "error: server.tensor_parallel_size, server.data_parallel_size, server.mem_per_gpu: TP x DP = 2 x 2 = 4 "
        "vLLM CPU worker(s), each counted as one of the server's GPUs, ask for 32000 MB per node (32000 of 16000 "
        "MB: 4 of 2 GPUs), but nodes of partition 'debug' have 16000 MB: set server.mem_per_gpu=4000M (memory per "
        "worker)"]
    with pytest.raises(InvalidConfig):
        build_plan(compose(*TP2XDP2), DEBUG)
    # what the message says to set is accepted, and TP=2 alone fits the default share
    assert cpu_problems(*TP2XDP2, "server.cpus_per_gpu=1", "server.mem_per_gpu=4000M") == []
    assert cpu_problems(*TP2XDP2[:4]) == []


def test_fewer_cpus_than_workers_is_a_warning_not_a_refusal():
    problems = cpu_problems(*TP2XDP2, "server.cpus_per_gpu=1", "server.mem_per_gpu=3000M",
                            "+server.sbatch.cpus-per-task=2")
    assert problems == [
        "warning: server.tensor_parallel_size, server.data_parallel_size, server.cpus_per_gpu: 4 vLLM CPU workers "
        "on 2 CPU(s) (server.sbatch.cpus-per-task=2 (passed as it is)): they will share CPUs (vLLM runs them, "
        "slower); give the server at least one CPU per worker"]


def test_the_rule_judges_cpu_servers_only():
    # on GPUs (device auto/cuda) the GPU checks decide; the same layout is refused there for its GPUs instead
    assert check_cpu_server(compose(*TP2XDP2[:2], *TP2XDP2[3:]), DEBUG) == []
