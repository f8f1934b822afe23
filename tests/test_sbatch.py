"""The rendered heterogeneous sbatch script: golden files per topology, and quoting."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import compose
from launcher.plan.build import build_plan
from launcher.plan.plan import Plan
from launcher.plan.sbatch import render_sbatch, sbatch_quote, supervisor_command
from launcher.validate.problems import Facts

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"  # regenerate after an intended change, then review the diff

TOPOLOGIES = {
    # 1 server GPU + 1 trainer GPU
    "one_plus_one": ("trainer.gpus_per_node=1", "grpo.per_device_train_batch_size=8"),
    # a trainer over 2 nodes x 4 GPUs with ZeRO-3, account/qos/partition, extra sbatch flags per component
    "multinode_trainer": ("trainer.nodes=2", "trainer.gpus_per_node=4", "trainer.strategy=zero3",
                          "cluster.partition=gpu", "cluster.account=rl-team", "cluster.qos=high",
                          "cluster.time=2-00:00:00", "+server.sbatch.exclusive=true", "trainer.cpus_per_gpu=12",
                          "trainer.mem_per_gpu=100G", "cluster.setup=['module load cuda/12.4','source ~/venv/bin/activate']"),
    # the same trainer topology on CPU nodes: 2 nodes x 2 processes, no GPU flags (docs/cpu.md)
    "multinode_trainer_cpu": ("device=cpu", "trainer.nodes=2", "trainer.gpus_per_node=2", "trainer.strategy=ddp",
                              "cluster.partition=gpu",
                              "cluster.time=01:00:00", "trainer.cpus_per_gpu=8", "trainer.mem_per_gpu=16G"),
    # a TP=2 x DP=2 server on one 4-GPU node
    "tp2_dp2": ("server.tensor_parallel_size=2", "server.data_parallel_size=2", "server.gpus_per_node=4",
                "server.extra_args=[--enable-prefix-caching]", "cluster.constraint=h100"),
}


# what sinfo says about a production-like partition: 8 GPUs, 96 CPUs and 1 TB per node
FACTS = Facts(partitions={"gpu": {"gpus_per_node": 8, "nodes": 16, "max_time_s": None, "cpus_per_node": 96,
                                  "mem_mb_per_node": 1024000}}, default_partition="gpu")


def render(*overrides: str, facts: Facts = FACTS) -> str:
    cfg = compose("+experiment=deepmath", "cluster=slurm", "cluster.python=/opt/venv/bin/python", *overrides)
    plan = build_plan(cfg, facts)
    return render_sbatch(plan, "/jobs/deepmath/20261128-120000-abcd",
                         supervisor_command(plan, "/jobs/deepmath/20261128-120000-abcd/submitit"))


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_golden_scripts(name):
    script = render(*TOPOLOGIES[name])
    golden = GOLDEN / f"{name}.sbatch"
    if UPDATE:
        golden.write_text(script)
    assert script == golden.read_text()
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_het_script_shape():
    script = render()
    lines = script.splitlines()
    assert lines.count("#SBATCH hetjob") == 1
    first, second = script.split("#SBATCH hetjob")
    assert "--gpus-per-node=1" in first and "--gpus-per-node=2" in second
    assert "#SBATCH --signal=B:USR2@300" in first  # B: so the batch shell (the supervisor) gets it
    assert lines[-1].startswith("exec /opt/venv/bin/python -u -m submitit.core._submit ")  # no outer srun
    assert "srun" not in script


def test_sbatch_quote_follows_sbatch_parsing():
    assert sbatch_quote("gpu") == "gpu"
    assert sbatch_quote("a b") == '"a b"'
    assert sbatch_quote('say "hi" #1 \\ ok') == '"say \\"hi\\" \\#1 \\\\ ok"'


NASTY = ["two words", "it's", 'say "hi"', "$(touch /tmp/pwned)", "`id`", "a;b", "x && y", "$HOME", "back\\slash"]


def test_env_values_reach_the_job_unchanged(tmp_path):
    cfg = compose("+experiment=deepmath", "cluster=slurm")
    for i, value in enumerate(NASTY + ["line1\nline2"]):
        cfg.cluster.env[f"V{i}"] = value
    cfg.cluster.setup = ["echo setup-ran"]
    plan = build_plan(cfg)
    marker = tmp_path / "pwned"
    script = render_sbatch(plan, f"{tmp_path}/job dir; $(touch {marker})",
                           ["python3", "-c", "pass"])
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    # run the script's shell part (everything but its final exec) and read the values back
    body = script.rsplit("\nexec ", 1)[0]
    probe = body + "\npython3 -c 'import json, os; print(json.dumps({k: v for k, v in os.environ.items() " \
                   "if k.startswith((\"V\", \"LAUNCHER_JOB_DIR\"))}))'\n"
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr

    seen = json.loads(out.stdout.splitlines()[-1])
    for i, value in enumerate(NASTY + ["line1\nline2"]):
        assert seen[f"V{i}"] == value
    assert seen["LAUNCHER_JOB_DIR"].endswith("job dir; $(touch " + str(marker) + ")")
    assert not marker.exists()
    assert not Path("/tmp/pwned").exists()


def test_sbatch_values_with_spaces_and_quotes_are_one_argument():
    cfg = compose("+experiment=deepmath", "cluster=slurm")
    cfg.name = 'grpo "nightly" #3'
    cfg.cluster.sbatch["comment"] = "it's $(not) run; `ever`"
    script = render_sbatch(build_plan(cfg), "/j", ["python3"])
    assert '#SBATCH --job-name="grpo \\"nightly\\" \\#3"' in script
    assert "#SBATCH --comment=\"it's $(not) run; `ever`\"" in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_colocate_renders_one_plain_job():
    script = render("mode=colocate")
    assert "#SBATCH hetjob" not in script
    assert script.count("#SBATCH --nodes=") == 1 and "# component 0: trainer" in script


def test_the_job_folder_reaches_the_trainer_as_launcher_job_dir_only():
    """No command takes the job folder as an argument; the script exports LAUNCHER_JOB_DIR."""
    cfg = compose("+experiment=deepmath", "cluster=slurm", "cluster.python=/opt/venv/bin/python")
    plan = build_plan(cfg)
    train = plan.component("trainer").execs
    assert train[-2:] == ["-m", "launcher.train"] and not any("{job_dir}" in a for a in train)
    cfg.trainer.preflight = True
    assert build_plan(cfg).component("trainer").execs == ["/opt/venv/bin/python", "-u", "-m", "launcher.train",
                                                          "--preflight"]
    script = render_sbatch(plan, "/j/x", ["python3"])
    assert "export LAUNCHER_JOB_DIR=/j/x" in script and "#SBATCH --output=/j/x/slurm-%j.out" in script


def test_plan_is_pure_data_that_round_trips():
    plan = build_plan(compose("+experiment=deepmath", "cluster=slurm", "reward.weights=[1.0]"))
    again = Plan.from_json(plan.to_json())
    assert again == plan and str(again) == str(plan)
    assert (plan.backend, plan.mode, plan.device) == ("slurm", "server", "auto") and type(plan.mode) is str
    assert plan.grpo["reward_weights"] == [1.0] and plan.grpo["output_dir"] == "{job_dir}/output"
