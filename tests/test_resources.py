"""CPUs and memory per component: sinfo's node facts, the request each component makes and why, the keys'
checks, what the dry-run says, and the srun CPUs the supervisor passes from the job's allocation."""

from __future__ import annotations

import pytest

from conftest import compose
from launcher.plan.build import build_plan
from launcher.plan.plan import Plan
from launcher.slurm.allocation import component_cpus, cpus_per_node
from launcher.supervisor.steps import SlurmSteps
from launcher.validate.facts import parse_sinfo
from launcher.validate.problems import Facts, InvalidConfig
from launcher.validate.resources import component_request, memory_mb

# `sinfo -h -o '%R|%G|%D|%l|%P|%c|%m'`: the test cluster's line, and a partition with two kinds of GPU node
SINFO = """\
debug|gpu:2|3|infinite|debug*|4|16000
gpu|gpu:h100:8(S:0-1)|12|2-00:00:00|gpu|96|1024000
gpu|gpu:h100:8(S:0-1)|4|2-00:00:00|gpu|64|512000
gpu|gpu:a10:4|6|2-00:00:00|gpu|32|256000
cpu|(null)|32|7-00:00:00|cpu|128|512000
"""
PARTITIONS, DEFAULT = parse_sinfo(SINFO)
FACTS = Facts(partitions=PARTITIONS, default_partition=DEFAULT)


def request(*overrides: str, name: str = "trainer", facts: Facts = FACTS):
    return component_request(compose("+experiment=smoke", "cluster=slurm", *overrides), name, facts)


def test_sinfo_gives_cpus_and_memory_of_the_nodes_with_the_most_gpus():
    assert PARTITIONS["debug"] == {"gpus_per_node": 2, "nodes": 3, "max_time_s": None, "cpus_per_node": 4,
                                   "mem_mb_per_node": 16000}
    # two groups of 8-GPU nodes: the smaller one (a component must fit any of them); the 4-GPU nodes don't count
    assert PARTITIONS["gpu"]["cpus_per_node"] == 64 and PARTITIONS["gpu"]["mem_mb_per_node"] == 512000
    assert PARTITIONS["gpu"]["nodes"] == 22 and PARTITIONS["gpu"]["gpus_per_node"] == 8
    assert PARTITIONS["cpu"]["gpus_per_node"] == 0 and PARTITIONS["cpu"]["cpus_per_node"] == 128
    # the older 5-field format still parses, without CPU facts
    old, _ = parse_sinfo("debug|gpu:2|3|infinite|debug*\n")
    assert old == {"debug": {"gpus_per_node": 2, "nodes": 3, "max_time_s": None}}


def test_default_is_the_gpu_share_of_the_node():
    r = request()
    assert (r.cpus, r.mem_mb, r.exclusive) == (2, 8000, False)
    assert r.cpus_why == "2 of 4 CPUs: 1 of 2 GPUs" and r.mem_why == "8000 of 16000 MB: 1 of 2 GPUs"
    r = request("cluster.partition=gpu", "trainer.gpus_per_node=2", "grpo.per_device_train_batch_size=4")
    assert (r.cpus, r.mem_mb) == (16, 128000) and r.cpus_why == "16 of 64 CPUs: 2 of 8 GPUs"
    r = request("cluster.partition=cpu", "device=cpu")
    assert (r.cpus, r.mem_mb) == (128, 512000) and "the nodes of 'cpu' have no GPUs" in r.cpus_why


def test_keys_set_the_amounts_and_exclusive_takes_whole_nodes():
    r = request("trainer.cpus_per_gpu=1", "trainer.mem_per_gpu=2G")
    assert (r.cpus, r.mem_mb, r.exclusive) == (1, 2048, False)
    assert r.cpus_why == "1 CPUs: trainer.cpus_per_gpu=1 x 1 GPU(s) (nodes of 'debug' have 4)"
    r = request("cluster.exclusive=true", name="server")
    assert (r.cpus, r.mem_mb, r.exclusive) == (None, 0, True)
    assert r.sbatch() == {"exclusive": True, "mem": 0}
    assert r.cpus_why == "the whole node: cluster.exclusive=true"


def test_without_sinfo_a_component_asks_for_whole_nodes_unless_told():
    r = request(facts=Facts())
    assert (r.cpus, r.mem_mb, r.exclusive) == (None, 0, True)
    assert "sinfo did not say" in r.cpus_why and "trainer.cpus_per_gpu" in r.cpus_why
    r = request("trainer.cpus_per_gpu=8", facts=Facts())
    assert (r.cpus, r.mem_mb, r.exclusive) == (8, None, False) and "the site's default" in r.mem_why


def test_sbatch_flags_win_and_are_passed_as_they_are():
    cfg = compose("+experiment=smoke", "cluster=slurm", "+trainer.sbatch.c=3", "+cluster.sbatch.mem-per-cpu=1G")
    r = component_request(cfg, "trainer", FACTS)
    assert r.cpus == 3 and r.mem_mb is None and r.cpus_why == "trainer.sbatch.c=3 (passed as it is)"
    plan = build_plan(cfg, FACTS)
    flags = plan.component("trainer").sbatch
    assert flags["cpus-per-task"] == 3 and flags["mem-per-cpu"] == "1G" and "mem" not in flags and "c" not in flags


def test_memory_sizes():
    assert [memory_mb(v) for v in ("64G", "500M", "1T", "64000", "2gb", "1.5G", "-1")] == \
        [65536, 500, 1048576, 64000, 2048, None, None]


@pytest.mark.parametrize("overrides, message", [
    (["server.cpus_per_gpu=8"], "server.cpus_per_gpu, cluster.partition: 8 CPUs per node requested "
                                "(server.cpus_per_gpu=8 x 1 GPU(s)), but nodes of partition 'debug' have 4"),
    (["trainer.mem_per_gpu=20G"], "trainer.mem_per_gpu, cluster.partition: 20480 MB of memory per node requested "
                                  "(trainer.mem_per_gpu=20G x 1 GPU(s)), but nodes of partition 'debug' have 16000"),
    (["trainer.cpus_per_gpu=0"], "trainer.cpus_per_gpu: must be a positive integer or null, got 0"),
    (["server.mem_per_gpu=lots"], "server.mem_per_gpu: 'lots' is not a memory size (64G, 500M, or MB)"),
    (["cluster.exclusive=true", "trainer.cpus_per_gpu=2"],
     "trainer.cpus_per_gpu, cluster.exclusive: cluster.exclusive=true already gives whole nodes: set one of them"),
])
def test_requests_the_nodes_cannot_meet_are_refused_naming_the_key(overrides, message):
    with pytest.raises(InvalidConfig) as info:
        build_plan(compose("+experiment=smoke", "cluster=slurm", *overrides), FACTS)
    assert message in [str(p) for p in info.value.problems]


def test_dry_run_says_what_each_component_asks_for_and_why():
    plan = build_plan(compose("+experiment=smoke", "cluster=slurm"), FACTS)
    text = str(plan)
    assert text.count("asks: CPUs 2 of 4 CPUs: 1 of 2 GPUs; memory 8000 of 16000 MB: 1 of 2 GPUs") == 2
    assert plan.component("server").sbatch["cpus-per-task"] == 2 and plan.component("server").sbatch["mem"] == "8000M"
    back = Plan.from_json(plan.to_json())  # what the job reads
    assert back.component("trainer").resources == plan.component("trainer").resources
    local = build_plan(compose("+experiment=smoke", "cluster=local"), Facts(local_gpus=0))
    assert local.component("trainer").resources is None and "asks:" not in str(local)


def test_srun_gives_the_step_the_components_cpus():
    assert cpus_per_node("4") == 4 and cpus_per_node("8(x2),4") == 4 and cpus_per_node("x") is None
    env = {"SLURM_JOB_CPUS_PER_NODE_HET_GROUP_0": "2", "SLURM_JOB_CPUS_PER_NODE_HET_GROUP_1": "6(x2)",
           "SLURM_JOB_CPUS_PER_NODE": "2"}
    assert component_cpus(env, 1) == 6 and component_cpus(env, None) == 2 and component_cpus({}, 0) is None
    plan = build_plan(compose("+experiment=smoke", "cluster=slurm"), FACTS)
    steps = SlurmSteps(plan)
    assert "--cpus-per-task=6" in steps.argv(plan.component("trainer"), env)
    assert not any(a.startswith("--cpus-per-task") for a in steps.argv(plan.component("server"), {}))
