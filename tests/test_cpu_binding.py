"""The vLLM CPU server's thread binding (launcher.components.cpus): the split of the step's CPUs across TP x
DP x PP workers, the VLLM_CPU_OMP_THREADS_BIND text vLLM parses, and when the launcher leaves it alone."""

from __future__ import annotations

import pytest

from launcher.components.cpus import (BIND_VAR, ServerLayout, bind_value, describe_binding, id_list, server_binding,
                                      split_cpus)


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
    import os
    env: dict[str, str] = {}
    record = server_binding(ServerLayout(2, 1), env)
    assert record["cpus"] == id_list(sorted(os.sched_getaffinity(0)))
