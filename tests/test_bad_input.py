"""Bad input never costs a queued job: a corpus of misconfigurations drawn from real failures, each rejected
before submission.

Every case runs in-process the way the CLI does: Hydra composes the overrides, then launcher.launch.launch()
gets the composed config, with a fake `sbatch` (which records any call), a fake `sinfo` (recorded partition
output: the test cluster's three partitions plus a production-like layout) and a fake `nvidia-smi` (this
machine has 2 GPUs) first on PATH, so the rules that need cluster facts run. For every case: the exit code
is 2 (invalid configuration, nothing submitted; documented in the README) or 1 for Hydra composition errors
(unknown keys, wrong types: Hydra's own message); the message names the key to change; the fake sbatch was
never called and no job folder was made. A few cases also run through the real CLI (`python -m launcher`,
a subprocess), as does a valid control that does reach the fake sbatch. Where a case comes from a known
failure, the comment says which.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from conftest import compose_hydra, fake_executable
from launcher.launch import launch

# `sinfo -h -o '%R|%G|%D|%l|%P|%c|%m'`: the first three lines recorded on the test cluster
# (scripts/slurm-test-cluster), the rest in the shape a production cluster prints (typed GRES with socket
# affinity, a CPU partition, limits)
SINFO = """\
debug|gpu:2|3|infinite|debug*|4|16000
grace|gpu:2|3|infinite|grace|4|16000
urgent|gpu:2|3|infinite|urgent|4|16000
gpu|gpu:h100:8(S:0-1)|16|2-00:00:00|gpu|96|1024000
short|gpu:h100:8(S:0-1)|4|1:00:00|short|96|1024000
cpu|(null)|32|7-00:00:00|cpu|128|512000
"""

SBATCH = """#!/bin/bash
printf '%s\\n' "$*" >> "$SBATCH_RECORD"
echo "Submitted batch job 4242"
"""


@pytest.fixture(scope="module")
def fake_cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    bin_dir = root / "bin"
    fake_executable(bin_dir, "sbatch", SBATCH)
    fake_executable(bin_dir, "sinfo", "cat <<'EOF'\n" + SINFO + "EOF\n")
    fake_executable(bin_dir, "nvidia-smi", "echo 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n"
                                           "echo 'GPU 1: NVIDIA H200 (UUID: GPU-1)'\n")
    # a model folder as validation reads it (config.json only): 16 attention heads, 8 key/value heads
    model = root / "model"
    model.mkdir()
    (model / "config.json").write_text('{"num_attention_heads": 16, "num_key_value_heads": 8}')
    odd = root / "model24"  # 24 heads, 8 kv heads: TP=6 divides the heads but not the kv heads
    odd.mkdir()
    (odd / "config.json").write_text('{"num_attention_heads": 24, "num_key_value_heads": 8}')
    data = root / "train.jsonl"
    data.write_text('{"prompt": [{"role": "user", "content": "1+1?"}], "solution": "2"}\n')
    a_file = root / "not-a-folder"
    a_file.write_text("")
    record = root / "sbatch-calls"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SBATCH_RECORD=str(record),
               HYDRA_FULL_ERROR="0")
    env.pop("SLURM_CONF", None)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return {"root": root, "env": env, "record": record, "model": model, "model24": odd, "data": data,
            "file": a_file}


def arguments(fake_cluster, overrides) -> list[str]:
    f = fake_cluster
    base = ["+experiment=smoke", "cluster=slurm", f"cluster.job_root={f['root'] / 'jobs'}",
            f"model.name_or_path={f['model']}", f"data.name_or_path={f['data']}"]
    return base + [a.format(**{k: v for k, v in f.items() if isinstance(v, Path)}) for a in overrides]


def run_cli(fake_cluster, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher", *arguments(fake_cluster, overrides)],
                          capture_output=True, text=True, env=fake_cluster["env"], cwd=fake_cluster["root"],
                          timeout=120)


def run_in_process(fake_cluster, monkeypatch, capsys, overrides) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of what `python -m launcher` does with these overrides, in this process."""
    for name in ("PATH", "SBATCH_RECORD"):
        monkeypatch.setenv(name, fake_cluster["env"][name])
    for name in ("SLURM_CONF", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(fake_cluster["root"])
    try:
        composed = compose_hydra(*arguments(fake_cluster, overrides))
    except ConfigCompositionException as error:  # the CLI prints Hydra's message and exits 1
        return 1, "", f"{error}\n{error.__cause__ or ''}"
    try:
        code = launch(composed)
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


# (id, overrides, exit code, text the message must contain: the key to change)
CASES = [
    # --- parallelism vs GPUs (vLLM refuses at start, after the queue wait)
    ("tp_exceeds_server_gpus", ["server.tensor_parallel_size=2", "server.gpus_per_node=1"], 2,
     "server.tensor_parallel_size"),
    ("tp_dp_exceed_server_gpus", ["server.tensor_parallel_size=2", "server.data_parallel_size=2",
                                  "server.gpus_per_node=2"], 2, "server.data_parallel_size"),
    ("tp_not_dividing_heads", ["server.tensor_parallel_size=3", "server.gpus_per_node=3"], 2,
     "server.tensor_parallel_size: TP = 3 must divide the model's attention heads (16"),
    ("tp_vs_kv_heads", ["model.name_or_path={model24}", "server.tensor_parallel_size=6", "server.gpus_per_node=6"],
     2, "server.tensor_parallel_size: TP = 6 and the model's 8 key/value heads"),
    ("tp_across_nodes_without_ray", ["server.nodes=2", "server.tensor_parallel_size=2"], 2,
     "server.distributed_executor_backend"),
    ("executor_typo", ["server.distributed_executor_backend=rey"], 2, "server.distributed_executor_backend"),
    ("zero_trainer_gpus", ["trainer.gpus_per_node=0"], 2, "trainer.gpus_per_node"),
    ("negative_server_nodes", ["server.nodes=-1"], 2, "server.nodes"),
    # --- batch sizes TRL's GRPOConfig rejects (in the job, after the queue wait)
    ("generation_batch_not_divisible", ["grpo.per_device_train_batch_size=3"], 2, "grpo.num_generations"),
    ("one_generation", ["grpo.num_generations=1"], 2, "grpo.num_generations"),
    ("num_generations_over_batch", ["grpo.per_device_train_batch_size=2"], 2,
     "num_generations (4) is larger than the generation batch (2)"),
    ("generation_batch_vs_global_batch", ["+grpo.generation_batch_size=6"], 2, "grpo.generation_batch_size"),
    ("generation_batch_and_steps", ["+grpo.generation_batch_size=8", "+grpo.steps_per_generation=2"], 2,
     "grpo.steps_per_generation"),
    ("zero_per_device_batch", ["grpo.per_device_train_batch_size=0"], 2, "grpo.per_device_train_batch_size"),
    ("zero_accumulation", ["grpo.gradient_accumulation_steps=0"], 2, "grpo.gradient_accumulation_steps"),
    ("zero_steps_per_generation", ["+grpo.steps_per_generation=0"], 2, "grpo.steps_per_generation"),
    ("completion_longer_than_context", ["grpo.max_completion_length=1024"], 2,
     "grpo.max_completion_length, server.max_model_len"),
    # --- GRPOConfig fields
    ("grpo_field_typo", ["+grpo.learning_rat=1e-5"], 2, "did you mean grpo.learning_rate"),
    ("grpo_wrong_type", ["grpo.learning_rate=fast"], 2, "grpo.learning_rate: must be float"),
    ("grpo_choice_typo", ["+grpo.save_strategy=step"], 2, "grpo.save_strategy"),
    ("grpo_launcher_owned_port", ["+grpo.vllm_server_port=8000"], 2, "grpo.vllm_server_port: is set by the launcher"),
    ("grpo_launcher_owned_use_vllm", ["+grpo.use_vllm=false"], 2, "use trainer.use_vllm"),
    # numbers TRL accepts that make the run meaningless (torch refuses a negative lr only when training starts)
    ("negative_learning_rate", ["grpo.learning_rate=-1e-6"], 2, "grpo.learning_rate: must be > 0, got -1e-06"),
    ("zero_learning_rate", ["grpo.learning_rate=0"], 2, "grpo.learning_rate: must be > 0"),
    ("zero_max_steps", ["grpo.max_steps=0"], 2, "grpo.max_steps: must be at least 1, or -1"),
    ("zero_epochs_without_steps", ["grpo.max_steps=-1", "+grpo.num_train_epochs=0"], 2, "grpo.num_train_epochs"),
    ("greedy_generation", ["+grpo.temperature=0"], 2, "grpo.temperature: must be > 0"),
    ("top_p_over_one", ["+grpo.top_p=1.5"], 2, "grpo.top_p: must be > 0 and <= 1"),
    ("negative_kl_beta", ["+grpo.beta=-0.1"], 2, "grpo.beta: must be >= 0"),
    ("zero_clip_range", ["+grpo.epsilon=0"], 2, "grpo.epsilon"),
    ("zero_save_steps", ["grpo.save_steps=0"], 2, "grpo.save_steps"),
    ("adam_beta_one", ["+grpo.adam_beta2=1.0"], 2, "grpo.adam_beta2: must be >= 0 and < 1"),
    # --- paths and names
    ("missing_model", ["model.name_or_path=/nonexistent/models/qwen"], 2, "model.name_or_path"),
    ("missing_data", ["data.name_or_path=/nonexistent/train.jsonl"], 2, "data.name_or_path"),
    ("hub_id_with_space", ["model.name_or_path=Qwen/Qwen3 1.7B"], 2, "model.name_or_path"),
    ("reward_not_import_path", ["reward.funcs=[accuracy_reward]"], 2, "reward.funcs"),
    ("reward_weights_mismatch", ["reward.weights=[1.0,2.0]"], 2, "reward.weights"),
    ("reward_weights_all_zero", ["reward.weights=[0.0]"], 2, "reward.weights: every weight is 0"),
    ("reward_timeout_zero", ["reward.timeout_s=0"], 2, "reward.timeout_s: must be > 0 seconds, or null for no limit"),
    # a reward module the job's Python does not have: ModuleNotFoundError in the job, after the queue wait
    ("reward_module_missing", ["reward.funcs=[my_rewardz.score]"], 2,
     "reward.funcs: 'my_rewardz.score': no module 'my_rewardz'"),
    ("name_with_slash", ["name=runs/a"], 2, "name:"),
    ("name_with_pipe", ["name='a|b'"], 2, "no '|' (sacct's delimiter)"),  # sacct -P rows would split
    ("job_root_is_a_file", ["cluster.job_root={file}"], 2, "cluster.job_root"),
    ("missing_mandatory_model", ["model.name_or_path=???"], 2, "model.name_or_path: is required"),
    # --- schema: Hydra rejects at composition (exit 1, Hydra's message names the key)
    ("unknown_key", ["server.prot=8000"], 1, "server.prot"),
    ("wrong_type_int", ["server.nodes=two"], 1, "server.nodes"),
    ("unknown_trainer_key", ["trainer.watchdog=10"], 1, "trainer.watchdog"),
    ("bad_mode", ["mode=serve"], 1, "mode"),
    ("bad_strategy", ["trainer.strategy=zero4"], 1, "trainer.strategy"),
    ("cluster_key_typo", ["cluster.partion=gpu"], 1, "cluster.partion"),
    ("wrong_type_bool", ["server.enforce_eager=maybe"], 1, "server.enforce_eager"),
    # a key added with `+` to a typed section: Hydra accepts it, the typed config would drop it (issue 15)
    ("unknown_key_with_plus", ["+server.bogus_key=1"], 2, "server.bogus_key: is not a key of ServerConfig"),
    ("typo_with_plus_server", ["+server.tensor_paralel_size=2"], 2, "did you mean server.tensor_parallel_size?"),
    ("typo_with_plus_trainer", ["+trainer.watchdog_timeout=10"], 2, "did you mean trainer.watchdog_timeout_s?"),
    ("typo_with_plus_cluster", ["+cluster.partion=gpu"], 2, "cluster.partion: is not a key of ClusterConfig"),
    ("typo_with_plus_model", ["+model.revison=main"], 2, "did you mean model.revision?"),
    ("typo_with_plus_data", ["+data.splt=test"], 2, "did you mean data.split?"),
    ("typo_with_plus_reward", ["+reward.weight=[1.0]"], 2, "did you mean reward.weights?"),
    ("top_level_typo_with_plus", ["+devic=cpu"], 2, "did you mean device?"),
    # --- walltime
    ("walltime_not_a_time", ["cluster.time=abc"], 2, "cluster.time"),
    ("walltime_zero", ["cluster.time=0"], 2, "cluster.time: must be longer than 0"),
    ("signal_before_start", ["cluster.time=00:04:00"], 2, "cluster.time, cluster.signal_before_end_s"),
    ("checkpoint_does_not_fit", ["cluster.signal_before_end_s=60"], 2, "cluster.signal_before_end_s"),
    ("walltime_over_partition_limit", ["cluster.partition=short", "cluster.time=02:00:00"], 2,
     "cluster.time: exceeds the time limit of partition 'short'"),
    # --- what sinfo knows: partitions and GRES the cluster does not have
    ("unknown_partition", ["cluster.partition=gpu-a100"], 2, "cluster.partition: partition 'gpu-a100' does not exist"),
    ("more_gpus_than_nodes_have", ["cluster.partition=gpu", "trainer.gpus_per_node=16"], 2,
     "trainer.gpus_per_node, cluster.partition"),
    ("gpu_job_on_cpu_partition", ["cluster.partition=cpu"], 2, "nodes of partition 'cpu' have at most 0"),
    ("more_nodes_than_partition", ["trainer.nodes=3"], 2, "partition 'debug' has 3"),
    ("partition_with_space", ["cluster.partition=gpu a100"], 2, "cluster.partition"),
    ("account_with_quote", ["cluster.account=\"ml'team\""], 2, "cluster.account"),
    # --- CPUs and memory per component (a request the nodes cannot meet pends forever or is refused by sbatch)
    ("more_cpus_than_nodes_have", ["trainer.cpus_per_gpu=8"], 2,
     "trainer.cpus_per_gpu, cluster.partition: 8 CPUs per node requested (trainer.cpus_per_gpu=8 x 1 GPU(s)), "
     "but nodes of partition 'debug' have 4"),
    ("more_memory_than_nodes_have", ["server.mem_per_gpu=64G"], 2, "nodes of partition 'debug' have 16000"),
    ("memory_not_a_size", ["trainer.mem_per_gpu=8GiB"], 2, "trainer.mem_per_gpu: '8GiB' is not a memory size"),
    ("exclusive_and_cpus", ["cluster.exclusive=true", "server.cpus_per_gpu=2"], 2,
     "server.cpus_per_gpu, cluster.exclusive"),
    # --- the network interface and multi-node servers
    ("interface_name_with_slash", ["cluster.network_interface=ib0/1"], 2, "cluster.network_interface"),
    ("interface_and_host", ["cluster.network_interface=ib0", "server.host=10.0.0.1"], 2,
     "cluster.network_interface, server.host"),
    ("ray_executor", ["server.distributed_executor_backend=ray"], 2, "nothing in the job starts one"),
    ("vllm_multi_node_flags", ["server.extra_args=[--nnodes,2]"], 2, "server.extra_args: --nnodes is vLLM's multi-node"),
    # --- #SBATCH flags
    ("sbatch_option_typo", ["+cluster.sbatch.memory=64G"], 2, "did you mean cluster.sbatch.mem"),
    ("sbatch_bad_memory", ["+cluster.sbatch.mem=64GiB"], 2, "cluster.sbatch.mem"),
    ("sbatch_owned_gres", ["+server.sbatch.gres=gpu:2"], 2, "server.sbatch.gres: is rendered by the launcher"),
    ("sbatch_owned_time", ["+cluster.sbatch.t=10:00"], 2, "set cluster.time"),
    ("sbatch_array", ["+cluster.sbatch.array=0-3"], 2, "cluster.sbatch.array"),
    ("sbatch_zero_cpus", ["+trainer.sbatch.cpus-per-task=0"], 2, "trainer.sbatch.cpus-per-task"),
    ("sbatch_flag_without_value", ["+cluster.sbatch.mail-type=true"], 2, "--mail-type needs a value"),
    ("sbatch_newline", ["+cluster.sbatch.comment='a\nb'"], 2, "cluster.sbatch.comment: an #SBATCH value cannot"),
    # --- pass-through flags that fight the launcher's own
    ("server_port_in_extra_args", ["server.extra_args=[--port,9000]"], 2, "server.extra_args: --port is set"),
    ("server_tp_in_extra_args", ["server.extra_args=['--tensor_parallel_size=2']"], 2, "use server.tensor_parallel_size"),
    ("server_api_key", ["server.extra_args=[--api-key,abc]"], 2, "--api-key breaks training"),
    ("trainer_num_processes", ["trainer.extra_args=[--num_processes,8]"], 2, "trainer.extra_args: --num_processes"),
    # --- environment and secrets
    ("secret_in_env", ["+cluster.env.HF_TOKEN=hf_abc"], 2, "cluster.env.HF_TOKEN"),
    ("listed_secret_in_env", ["+trainer.env.MY_KEY=x", "cluster.secret_env=[MY_KEY]"], 2,
     "trainer.env.MY_KEY, cluster.secret_env"),
    ("reserved_env", ["+trainer.env.CUDA_VISIBLE_DEVICES=0"], 2, "trainer.env.CUDA_VISIBLE_DEVICES"),
    ("bad_secret_name", ["cluster.secret_env=[HF-TOKEN]"], 2, "cluster.secret_env"),
    # --- ports and timeouts
    ("privileged_port", ["server.port=80"], 2, "server.port"),
    ("same_trainer_ports", ["trainer.group_port=29500", "trainer.main_process_port=29500"], 2,
     "trainer.group_port, trainer.main_process_port"),
    ("zero_health_grace", ["server.health_grace_s=0"], 2, "server.health_grace_s"),
    ("memory_utilization_over_one", ["server.gpu_memory_utilization=1.5"], 2, "server.gpu_memory_utilization"),
    ("negative_requeues", ["cluster.max_requeues=-1"], 2, "cluster.max_requeues"),
    ("zero_max_samples", ["data.max_samples=0"], 2, "data.max_samples"),
    # --- the local backend (this machine: 2 GPUs by the fake nvidia-smi)
    ("local_overlapping_gpus", ["cluster=local", "server.gpus=[0]", "trainer.gpus=[0]"], 2,
     "server.gpus, trainer.gpus: server and trainer share GPU(s) [0]"),
    ("local_gpu_that_does_not_exist", ["cluster=local", "trainer.gpus=[5]"], 2, "GPU(s) [5, 6] do not exist: this machine has 2"),
    ("local_two_nodes", ["cluster=local", "trainer.nodes=2"], 2, "server.nodes, trainer.nodes"),
]


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40
    assert len({case[0] for case in CASES}) == len(CASES)


def job_folders(fake_cluster) -> set[Path]:
    return set((fake_cluster["root"] / "jobs").glob("*/*"))


def assert_nothing_submitted(fake_cluster, before: set[Path]) -> None:
    assert not fake_cluster["record"].exists(), f"sbatch was called: {fake_cluster['record'].read_text()}"
    assert job_folders(fake_cluster) == before, "a job folder was made"


@pytest.mark.parametrize("overrides, code, names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_before_submission(fake_cluster, monkeypatch, capsys, overrides, code, names):
    before = job_folders(fake_cluster)
    got, out, err = run_in_process(fake_cluster, monkeypatch, capsys, overrides)
    message = out + err
    assert got == code, message
    assert names in message, message
    if code == 2:
        assert "invalid configuration, nothing was submitted" in err, message
        assert names in err, message
    assert_nothing_submitted(fake_cluster, before)


def test_a_valid_config_does_reach_the_fake_sbatch(fake_cluster):
    """The control, through the real CLI: the fakes work, so an empty record means the launcher stopped itself."""
    out = run_cli(fake_cluster, "name=control")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "submitted job 4242" in out.stdout
    assert fake_cluster["record"].read_text().count("\n") == 1
    fake_cluster["record"].unlink()


CLI_CASES = ("tp_exceeds_server_gpus", "missing_mandatory_model", "local_overlapping_gpus", "unknown_key_with_plus",
             "unknown_key")


@pytest.mark.parametrize("case", CLI_CASES)
def test_the_real_cli_rejects_bad_input(fake_cluster, case):
    """A few cases end to end: the exit code, the message on stderr, nothing reaches sbatch."""
    _, overrides, code, names = next(c for c in CASES if c[0] == case)
    before = job_folders(fake_cluster)
    out = run_cli(fake_cluster, *overrides)
    assert out.returncode == code, out.stdout + out.stderr
    assert names in out.stderr, out.stderr
    if code == 2:
        assert out.stderr.startswith("launcher: invalid configuration, nothing was submitted:\n"), out.stderr
    assert_nothing_submitted(fake_cluster, before)
