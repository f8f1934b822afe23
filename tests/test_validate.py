"""Every validation rule: a failing example and its exact message (the key to change is named)."""

import sys

import pytest

from conftest import compose
from launcher.plan.build import build_plan
from launcher.validate.problems import Facts, InvalidConfig
from launcher.validate.rules import validate


def problems(*overrides, facts=Facts()):
    return {(p.keys, p.message) for p in validate(compose(*overrides), facts) if p.severity == "error"}


def messages(*overrides, facts=Facts()):
    return [str(p) for p in validate(compose(*overrides), facts)]


def base(tiny_model, data_file, *extra):
    return ("+experiment=deepmath", "cluster=slurm", f"model.name_or_path={tiny_model}",
            f"data.name_or_path={data_file}", *extra)


def test_valid_seed_has_no_errors(tiny_model, data_file):
    assert problems(*base(tiny_model, data_file)) == set()


def test_server_gpus_follow_tp_and_dp_unless_set(tiny_model, data_file):
    cfg = compose(*base(tiny_model, data_file, "server.tensor_parallel_size=2", "server.data_parallel_size=2"))
    assert cfg.server.gpus_per_node == 4
    cfg = compose(*base(tiny_model, data_file, "server.tensor_parallel_size=4", "server.nodes=2",
                        "server.distributed_executor_backend=ray"))
    assert cfg.server.gpus_per_node == 2


def test_tp_times_dp_must_equal_server_gpus(tiny_model, data_file):
    assert messages(*base(tiny_model, data_file, "server.tensor_parallel_size=2", "server.gpus_per_node=1")) == [
        "server.tensor_parallel_size, server.data_parallel_size, server.nodes, server.gpus_per_node: "
        "TP x DP = 2 x 1 = 2 must equal the server's GPUs, nodes x gpus_per_node = 1 x 1 = 1"]


def test_a_server_over_several_nodes_is_refused_saying_what_to_do(tiny_model, data_file):
    args = base(tiny_model, data_file, "server.tensor_parallel_size=4", "server.nodes=2", "server.gpus_per_node=2")
    [message] = messages(*args)
    assert message.startswith("server.nodes: a server over 2 nodes (TP x DP = 4 x 1) is not supported")
    assert "Set server.nodes=1 with server.gpus_per_node = TP x DP = 4" in message
    # Ray is no way around it: nothing in the job starts a Ray cluster
    assert "server.distributed_executor_backend: 'ray' needs a Ray cluster, and nothing in the job starts one" in \
        " ".join(messages(*args, "server.distributed_executor_backend=ray"))
    assert messages(*base(tiny_model, data_file, "server.distributed_executor_backend=ray")) == [
        "server.distributed_executor_backend: 'ray' needs a Ray cluster, and nothing in the job starts one; leave it "
        "null (vLLM's multiprocessing executor runs TP x DP on the server's node) or set mp"]
    assert messages(*base(tiny_model, data_file, "server.distributed_executor_backend=mp")) == []


def test_tp_must_divide_heads(tmp_path, data_file):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"num_attention_heads": 12, "num_key_value_heads": 4}')
    assert messages(*base(model, data_file, "server.tensor_parallel_size=8", "server.gpus_per_node=8")) == [
        f"server.tensor_parallel_size: TP = 8 must divide the model's attention heads (12, from {model}/config.json)"]


def test_tp_and_kv_heads_must_divide_one_another(tmp_path, data_file):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"num_attention_heads": 24, "num_key_value_heads": 8}')
    assert messages(*base(model, data_file, "server.tensor_parallel_size=6", "server.gpus_per_node=6")) == [
        "server.tensor_parallel_size: TP = 6 and the model's 8 key/value heads must divide one another"]


def test_data_parallel_on_dense_model_warns(tiny_model, data_file):
    found = validate(compose(*base(tiny_model, data_file, "server.data_parallel_size=2", "server.gpus_per_node=2")))
    assert [(p.severity, str(p)) for p in found] == [(
        "warning", "server.data_parallel_size: DP = 2 on a dense model: TRL documents data parallelism > 1 as "
                   "unsupported for dense models; prefer tensor_parallel_size, or check that vLLM accepts it")]


def test_data_parallel_on_moe_model_is_fine(tmp_path, data_file):
    model = tmp_path / "moe"
    model.mkdir()
    (model / "config.json").write_text('{"num_attention_heads": 16, "num_experts": 64}')
    assert validate(compose(*base(model, data_file, "server.data_parallel_size=2", "server.gpus_per_node=2"))) == []


@pytest.mark.parametrize("key", ["trainer.nodes", "trainer.gpus_per_node", "server.nodes", "server.gpus_per_node",
                                 "server.tensor_parallel_size", "server.data_parallel_size"])
def test_counts_must_be_positive(tiny_model, data_file, key):
    found = messages(*base(tiny_model, data_file, f"{key}=0"))
    assert f"{key}: must be a positive integer, got 0" in found


def test_generation_batch_divisible_by_num_generations(tiny_model, data_file):
    # 2 processes x 3 per device x 1 step = 6, not divisible by 4
    assert messages(*base(tiny_model, data_file, "grpo.per_device_train_batch_size=3", "grpo.num_generations=4",
                          "grpo.gradient_accumulation_steps=1")) == [
        "grpo.num_generations, grpo.per_device_train_batch_size, grpo.gradient_accumulation_steps, "
        "trainer.gpus_per_node: the generation batch (per_device_train_batch_size x processes x "
        "steps_per_generation = 3 x 2 x 1 = 6) must be divisible by num_generations (4)"]


def test_generation_batch_size_divisible_by_global_batch(tiny_model, data_file):
    assert messages(*base(tiny_model, data_file, "+grpo.generation_batch_size=20")) == [
        "grpo.generation_batch_size, grpo.per_device_train_batch_size, trainer.gpus_per_node, trainer.nodes: "
        "generation_batch_size (20) must be divisible by the global batch per_device_train_batch_size x "
        "processes = 8 x 2 = 16"]


def test_generation_batch_size_and_steps_per_generation_exclusive(tiny_model, data_file):
    assert messages(*base(tiny_model, data_file, "+grpo.generation_batch_size=32", "+grpo.steps_per_generation=2")) == [
        "grpo.generation_batch_size, grpo.steps_per_generation: set one of them, not both (TRL refuses both)"]


def test_num_generations_at_least_two(tiny_model, data_file):
    assert messages(*base(tiny_model, data_file, "grpo.num_generations=1")) == [
        "grpo.num_generations: GRPO needs at least 2 generations per prompt to compute advantages, got 1"]


def test_unknown_grpo_field_suggests(tiny_model, data_file):
    assert messages(*base(tiny_model, data_file, "+grpo.num_generation=8")) == [
        "grpo.num_generation: is not a field of trl.GRPOConfig (TRL 1.16.0); did you mean grpo.num_generations?"]


def test_grpo_field_type(tiny_model, data_file):
    assert messages(*base(tiny_model, data_file, "grpo.max_steps=lots")) == [
        "grpo.max_steps: must be int, got str 'lots'"]


def test_launcher_owned_grpo_field(tiny_model, data_file):
    assert messages(*base(tiny_model, data_file, "+grpo.vllm_server_port=8000")) == [
        "grpo.vllm_server_port: is set by the launcher; use server.port instead"]


@pytest.mark.parametrize("walltime", ["4h", "1:2:3:4", "-5", "abc"])
def test_walltime_format(tiny_model, data_file, walltime):
    assert messages(*base(tiny_model, data_file, f"cluster.time='{walltime}'")) == [
        f"cluster.time: {walltime!r} is not a Slurm walltime (use minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)"]


def test_walltime_shorter_than_signal(tiny_model, data_file):
    assert messages(*base(tiny_model, data_file, "cluster.time=00:04:00")) == [
        "cluster.time, cluster.signal_before_end_s: the pre-walltime signal (300 s before the end) would come "
        "before the job starts: walltime is only 240 s"]


def test_local_gpus_must_be_disjoint(tiny_model, data_file):
    found = messages("+experiment=deepmath", "cluster=local", f"model.name_or_path={tiny_model}",
                     f"data.name_or_path={data_file}", "server.gpus=[1]", "trainer.gpus=[0,1]")
    assert found == ["server.gpus, trainer.gpus: server and trainer share GPU(s) [1]: NCCL weight sync refuses two "
                     "ranks on one GPU ('Duplicate GPU detected'); give them disjoint GPUs, or use mode=colocate"]


def test_local_gpus_must_exist(tiny_model, data_file):
    found = messages("+experiment=deepmath", "cluster=local", f"model.name_or_path={tiny_model}",
                     f"data.name_or_path={data_file}", facts=Facts(local_gpus=2))
    assert found == ["server.gpus, trainer.gpus, server.gpus_per_node, trainer.gpus_per_node: GPU(s) [2] do not "
                     "exist: this machine has 2 (ids 0..1)"]


def test_local_backend_is_one_machine(tiny_model, data_file):
    found = messages("+experiment=deepmath", "cluster=local", f"model.name_or_path={tiny_model}",
                     f"data.name_or_path={data_file}", "trainer.nodes=2")
    assert found == ["server.nodes, trainer.nodes: the local backend runs on one machine: set both to 1"]


def test_local_paths_must_exist(tmp_path):
    found = messages("+experiment=deepmath", "cluster=slurm", f"model.name_or_path={tmp_path}/nope",
                     f"data.name_or_path={tmp_path}/train.jsonl")
    assert found == [f"model.name_or_path: local path {tmp_path}/nope does not exist",
                     f"data.name_or_path: local path {tmp_path}/train.jsonl does not exist"]


def test_reward_import_path(tiny_model, data_file):
    assert messages(*base(tiny_model, data_file, "reward.funcs=[accuracy reward]")) == [
        "reward.funcs: 'accuracy reward' is not an import path like trl.rewards.accuracy_reward"]


def test_reward_weights_match(tiny_model, data_file):
    assert messages(*base(tiny_model, data_file, "reward.weights=[1.0,2.0]")) == [
        "reward.weights, reward.funcs: 2 weights for 1 reward functions"]


def test_secret_in_env_is_refused(tiny_model, data_file):
    assert messages(*base(tiny_model, data_file, "+cluster.env.HF_TOKEN=hf_abc")) == [
        "cluster.env.HF_TOKEN, cluster.secret_env: looks like a secret: values in cluster.env are written into the "
        "job script; export HF_TOKEN in your shell and list it in cluster.secret_env instead"]


def test_launcher_owned_sbatch_flag(tiny_model, data_file):
    assert messages(*base(tiny_model, data_file, "+trainer.sbatch.nodes=3")) == [
        "trainer.sbatch.nodes: is rendered by the launcher; set server.nodes / trainer.nodes"]


def test_sbatch_value_without_newline(tiny_model, data_file):
    cfg = compose(*base(tiny_model, data_file))
    cfg.cluster.sbatch["comment"] = "a\nb"
    assert [str(p) for p in validate(cfg)] == ["cluster.sbatch.comment: an #SBATCH value cannot contain a newline"]


def test_port_range(tiny_model, data_file):
    assert messages(*base(tiny_model, data_file, "server.port=80")) == [
        "server.port: must be a port in 1024..65535 or null (pick one per job), got 80"]


def test_gpu_memory_utilization(tiny_model, data_file):
    assert messages(*base(tiny_model, data_file, "server.gpu_memory_utilization=1.5")) == [
        "server.gpu_memory_utilization: must be in (0, 1], got 1.5"]


def test_timeouts_positive(tiny_model, data_file):
    assert messages(*base(tiny_model, data_file, "server.startup_timeout_s=0")) == [
        "server.startup_timeout_s: must be > 0, got 0.0"]


SINFO = {"gpu": {"gpus_per_node": 8, "nodes": 4, "max_time_s": 2 * 86400}}


def test_partition_must_exist(tiny_model, data_file):
    assert messages(*base(tiny_model, data_file, "cluster.partition=gpus"),
                    facts=Facts(partitions=SINFO, default_partition="gpu")) == [
        "cluster.partition: partition 'gpus' does not exist (sinfo lists: gpu)"]


def test_partition_gpus_per_node(tiny_model, data_file):
    assert messages(*base(tiny_model, data_file, "trainer.gpus_per_node=16", "grpo.num_generations=16"),
                    facts=Facts(partitions=SINFO, default_partition="gpu")) == [
        "trainer.gpus_per_node, cluster.partition: 16 GPUs per node requested, but nodes of partition 'gpu' "
        "have at most 8"]


def test_partition_time_limit(tiny_model, data_file):
    assert messages(*base(tiny_model, data_file, "cluster.time=3-00:00:00"),
                    facts=Facts(partitions=SINFO, default_partition="gpu")) == [
        "cluster.time: exceeds the time limit of partition 'gpu' (172800 s)"]


def test_partition_nodes(tiny_model, data_file):
    assert messages(*base(tiny_model, data_file, "trainer.nodes=4"),
                    facts=Facts(partitions=SINFO, default_partition="gpu")) == [
        "server.nodes, trainer.nodes, cluster.partition: 5 nodes needed (components never share a node), "
        "partition 'gpu' has 4"]


def test_build_plan_raises_with_all_errors(tiny_model, data_file):
    with pytest.raises(InvalidConfig) as info:
        build_plan(compose(*base(tiny_model, data_file, "server.port=80", "grpo.num_generations=1")))
    assert len(info.value.problems) == 2


def test_facts_come_from_the_one_gpu_probe_and_sinfo(tmp_path, monkeypatch):
    from conftest import fake_executable
    from launcher.validate.facts import gather_facts

    fake_executable(tmp_path, "nvidia-smi", "echo 'GPU 0: A (UUID: 0)'; echo 'GPU 1: A (UUID: 1)'; echo 'GPU 2: A'\n")
    fake_executable(tmp_path, "sinfo", "echo 'gpu|gpu:h100:8(S:0-1)|16|2-00:00:00|gpu*'\n")
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    job = {"job_python": sys.executable, "modules": {"trl": True}}  # the reward's module, as the job's Python sees it
    assert gather_facts(compose("cluster=local")) == Facts(local_gpus=3, **job)
    assert gather_facts(compose("cluster=slurm")) == Facts(
        partitions={"gpu": {"gpus_per_node": 8, "nodes": 16, "max_time_s": 2 * 86400}}, default_partition="gpu", **job)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # the probe counts what this process may use
    assert gather_facts(compose("cluster=local")) == Facts(local_gpus=1, **job)
