"""A trainer over several nodes, the light parts: what each trainer node runs (a pure decision), the one
`accelerate launch` rendering CPUs and GPUs share, the resume fix for several CPU processes, and the rank
record's weights digest. The real two-node job is tests/integration/test_multinode_trainer.py."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import PYTHON, REPO, compose
from launcher.components import trainer_step
from launcher.components.trainer_step import ACCELERATE, CPU_FLAGS, IDLE, PLAIN, PREFLIGHT, node_run
from launcher.plan.build import build_plan
from launcher.validate.problems import Facts, InvalidConfig

FACTS = Facts(partitions={"gpu": {"gpus_per_node": 8, "nodes": 4, "max_time_s": None, "cpus_per_node": 32,
                                  "mem_mb_per_node": 128000}}, default_partition="gpu")
TWO_BY_TWO = ("trainer.nodes=2", "trainer.gpus_per_node=2", "trainer.use_vllm=false")


def plan_of(*overrides: str):
    return build_plan(compose("+experiment=smoke", "cluster=slurm", *overrides), FACTS)


def test_every_node_trains_on_cpu_as_on_gpus():
    plan = plan_of(*TWO_BY_TWO, "device=cpu")
    for rank in (0, 1):  # no node idles: both run the plan's accelerate launch
        run = node_run(plan, "cpu", rank, None)
        assert run.what == ACCELERATE and "4 processes (2 per node on 2 node(s)), gloo" in run.message
        assert trainer_step.local_ranks(plan, run) == 2
        assert node_run(plan, "cuda", rank, None).what == ACCELERATE
    one = plan_of("trainer.use_vllm=false", "device=cpu")
    assert node_run(one, "cpu", 0, None).what == PLAIN  # a world of one process: no distributed launcher
    assert trainer_step.local_ranks(one, node_run(one, "cpu", 0, None)) == 1
    assert [node_run(plan, "cpu", r, "no CUDA device").what for r in (0, 1)] == [PREFLIGHT, IDLE]


def test_cpu_refuses_strategies_that_need_cuda():
    with pytest.raises(InvalidConfig, match="trainer.strategy=zero3 needs CUDA"):
        plan_of(*TWO_BY_TWO, "device=cpu", "trainer.strategy=zero3")
    auto = plan_of(*TWO_BY_TWO, "trainer.strategy=fsdp2")  # device=auto: known on the node only
    with pytest.raises(SystemExit, match="trainer.strategy \\(fsdp2\\) needs CUDA"):
        node_run(auto, "cpu", 0, None)
    assert node_run(auto, "cuda", 0, None).what == ACCELERATE


def test_cpu_and_gpus_get_the_same_accelerate_launch(tmp_path, monkeypatch):
    """One rendering: --num_machines/--num_processes/--machine_rank/--main_process_ip/--main_process_port
    from the plan, node 0's published address and port; CPU adds only CPU_FLAGS before the script, and
    never `--cpu` (accelerate's simple launcher: one process or mpirun, not the torchrun agent)."""
    cpu, gpu = plan_of(*TWO_BY_TWO, "device=cpu"), plan_of(*TWO_BY_TWO, "device=cuda")
    assert cpu.component("trainer").execs == gpu.component("trainer").execs
    monkeypatch.setenv("SLURM_JOB_NODELIST", "node[2-3]")
    monkeypatch.delenv("LAUNCHER_BACKEND", raising=False)
    monkeypatch.setenv("SLURM_NODEID", "0")
    trainer_step.rendezvous(cpu, "10.213.0.12", tmp_path)  # node 0 publishes
    monkeypatch.setenv("SLURM_NODEID", "1")
    on_cpu = trainer_step.train_argv(cpu, "10.213.0.13", tmp_path, "cpu")
    on_gpu = trainer_step.train_argv(gpu, "10.213.0.13", tmp_path, "cuda")
    assert "--cpu" not in on_cpu
    script = on_gpu.index("-m", on_gpu.index("--main_process_port"))
    assert on_cpu == on_gpu[:script] + list(CPU_FLAGS) + on_gpu[script:]
    flags = dict(zip(on_gpu[3:script:2], on_gpu[4:script:2]))
    assert flags["--num_machines"] == "2" and flags["--num_processes"] == "4" and flags["--machine_rank"] == "1"
    assert flags["--main_process_ip"] == "10.213.0.12"
    assert flags["--config_file"].endswith("/multi_gpu.yaml")
    assert on_gpu[-2:] == ["-m", "launcher.train"]


LOAD_ON_INDEXED_CPU = """
import sys, torch
from launcher.train import cpu_resume
torch.save({"exp_avg": torch.ones(3)}, sys.argv[1])
if sys.argv[2] == "fix":
    assert cpu_resume.accept_indexed_cpu_locations() and not cpu_resume.accept_indexed_cpu_locations()
try:  # what Trainer._load_optimizer_and_scheduler does with world_size > 1: map_location=args.device
    state = torch.load(sys.argv[1], map_location=torch.device("cpu", 0), weights_only=True)
except RuntimeError as e:
    print("FAILED", e)
else:
    print("LOADED", state["exp_avg"].device, float(state["exp_avg"].sum()))
"""


@pytest.mark.parametrize("fix", ["fix", "nofix"])
def test_several_cpu_processes_resume_with_the_indexed_cpu_device(tmp_path, fix):
    pytest.importorskip("torch")
    out = subprocess.run([PYTHON, "-c", LOAD_ON_INDEXED_CPU, str(tmp_path / "optimizer.pt"), fix], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    if fix == "fix":
        assert out.stdout.strip() == "LOADED cpu 3.0"
    else:  # the counter-test: what transformers met before the fix
        assert "FAILED don't know how to restore data location" in out.stdout and "cpu:0" in out.stdout


def test_the_fix_is_only_for_an_indexed_cpu_world():
    torch = pytest.importorskip("torch")
    from launcher.train.cpu_resume import needed

    assert needed(torch.device("cpu", 0), 4)
    assert not needed(torch.device("cpu"), 4) and not needed(torch.device("cpu", 0), 1)
    assert not needed(torch.device("cuda", 0), 4)


def test_weights_digest_tells_identical_weights_from_different_ones(tmp_path):
    torch = pytest.importorskip("torch")
    from launcher.train.rank_record import record_path, weights_digest, write_record

    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    b = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    b.load_state_dict(a.state_dict())
    assert weights_digest(a) == weights_digest(b)

    class Wrapped(torch.nn.Module):  # DDP's wrapper: the digest looks through .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert weights_digest(Wrapped(b)) == weights_digest(a)
    with torch.no_grad():
        b[1].bias[0] += 1e-7  # one element, one ulp-ish: another digest
    assert weights_digest(a) != weights_digest(b)
    assert weights_digest(a, max_params=10) is None
    path = write_record(tmp_path, 3, 4, [5, 6], a, started_at=4)
    assert path == record_path(tmp_path, 3) and path.name == "rank-3.json"
    record = json.loads(path.read_text())
    assert (record["rank"], record["world_size"], record["steps"], record["started_at"]) == (3, 4, [5, 6], 4)
    assert record["weights_sha256"] == weights_digest(a) and record["host"]

