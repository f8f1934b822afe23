"""server.entrypoint=vllm: `vllm serve` started directly with exactly what TRL's `trl vllm-serve` imposes.

The pin: for the same settings, the plan's argv equals TRL's own build_command (trl/scripts/vllm_serve.py),
executable aside, and the plan's server env carries VLLM_SERVER_DEV_MODE=1. The proof: a local-backend run
on CPU whose server is `vllm serve` (the CPU weight-transfer override after TRL's NCCL one, the last wins)
trains a few steps through it with the weights synced, on a question/answer dataset mapped by
data.prompt_template and data.reward_columns.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON, compose
from launcher.components.serve import server_argv
from launcher.plan.build import build_plan
from launcher.plan.commands import SCALE_OUT


def _cfg(tmp_path, tiny_model, data_file, *overrides):
    return compose(f"model.name_or_path={tiny_model}", f"data.name_or_path={data_file}", "cluster=local",
                   f"cluster.job_root={tmp_path}/jobs", "server.entrypoint=vllm", *overrides)


SETTINGS = [
    ([], {}),
    (["server.tensor_parallel_size=2", "server.data_parallel_size=2", "server.gpu_memory_utilization=0.45",
      "server.max_model_len=2048", "server.enforce_eager=true", "model.trust_remote_code=true",
      "model.revision=v1", "server.distributed_executor_backend=mp", "server.extra_args=[--seed,7]"],
     {"tensor_parallel_size": 2, "data_parallel_size": 2, "gpu_memory_utilization": 0.45, "max_model_len": 2048,
      "enforce_eager": True, "trust_remote_code": True, "revision": "v1", "distributed_executor_backend": "mp"}),
]


@pytest.mark.parametrize("overrides,trl_args", SETTINGS)
def test_the_vllm_entrypoint_runs_what_trl_would(tmp_path, tiny_model, data_file, overrides, trl_args):
    vllm_serve = pytest.importorskip("trl.scripts.vllm_serve")
    plan = build_plan(_cfg(tmp_path, tiny_model, data_file, *overrides))
    server = plan.component("server")
    ours = server_argv(server.execs, "10.0.0.5", 8123, PYTHON)
    assert ours[0].endswith("/vllm") and ours[1] == "serve"
    args = vllm_serve.ScriptArguments(model=str(tiny_model), host="10.0.0.5", port=8123, **trl_args)
    extra = ["--seed", "7"] if overrides else []
    theirs = vllm_serve.build_command(args, extra)
    assert ours[1:] == theirs[theirs.index("serve"):]
    assert SCALE_OUT in ours  # vLLM 0.31 here
    assert server.env["VLLM_SERVER_DEV_MODE"] == "1"
    # the default stays TRL's wrapper, without the env
    default = build_plan(compose(f"model.name_or_path={tiny_model}", f"data.name_or_path={data_file}",
                                 "cluster=local", f"cluster.job_root={tmp_path}/jobs")).component("server")
    assert default.execs[:2] == ["trl", "vllm-serve"] and "VLLM_SERVER_DEV_MODE" not in default.env


def test_a_differing_flag_breaks_the_pin(tmp_path, tiny_model, data_file):
    """Counter-test: the comparison sees a single flag that differs."""
    vllm_serve = pytest.importorskip("trl.scripts.vllm_serve")
    plan = build_plan(_cfg(tmp_path, tiny_model, data_file, "server.max_model_len=2048"))
    ours = server_argv(plan.component("server").execs, "h", 1, PYTHON)
    theirs = vllm_serve.build_command(vllm_serve.ScriptArguments(model=str(tiny_model), host="h", port=1,
                                                                 max_model_len=1024))
    assert ours[1:] != theirs[theirs.index("serve"):]


def test_an_unknown_entrypoint_is_refused_naming_the_key(tmp_path, tiny_model, data_file):
    result = subprocess.run([PYTHON, "-m", "launcher", f"model.name_or_path={tiny_model}",
                             f"data.name_or_path={data_file}", "cluster=local", "server.entrypoint=sglang",
                             "dry_run=true"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0 and "server.entrypoint" in result.stdout + result.stderr


@pytest.mark.vllm_cpu
def test_vllm_serve_trains_through_the_cpu_server(tmp_path, smoke_assets_local):
    """A local run whose server is `vllm serve` itself trains 4 steps through it, weights synced over gloo;
    its dataset has `question`/`answer` columns, mapped by data.prompt_template and data.reward_columns."""
    rows = [json.loads(line) for line in (smoke_assets_local / "data" / "train.jsonl").read_text().splitlines()]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": r["prompt"][-1]["content"], "answer": r["solution"]}) + "\n"
                            for r in rows))
    argv = [PYTHON, "-m", "launcher", "+experiment=smoke", "cluster=local", f"cluster.job_root={tmp_path}/jobs",
            "server.enforce_eager=true", "server.entrypoint=vllm", f"data.name_or_path={data}",
            "data.prompt_template='Q: {question}'", "data.system_prompt='Answer briefly.'",
            "+data.reward_columns.solution=answer", "grpo.max_steps=4", "grpo.save_steps=100"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    job_dir = Path(re.search(r"job folder (\S+)", output).group(1))
    attempt = job_dir / "attempt-1"
    server_log = (attempt / "server.log").read_text()
    exec_line = next(line for line in server_log.splitlines() if line.startswith("server: exec "))
    assert re.match(r"server: exec \S+/vllm serve ", exec_line), exec_line
    assert "trl" not in exec_line.split()[2:4]
    for flag in ("--logprobs-mode processed_logprobs", "--max-logprobs -1", "--enable-scale-out",
                 "--weight-transfer-config {\"backend\": \"nccl\"}"):
        assert flag in exec_line, flag
    # the CPU override comes after TRL's NCCL one: argparse keeps the last
    assert exec_line.index('{"backend": "launcher_gloo"}') > exec_line.index('{"backend": "nccl"}'), exec_line
    assert "trl vllm-serve` is deprecated" not in server_log  # TRL's wrapper and its FutureWarning: not in the path
    train = [json.loads(line) for line in (attempt / "metrics.jsonl").read_text().splitlines()
             if json.loads(line).get("kind") == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all(r["weight_sync_s"] > 0 and r["grad_norm"] > 0 for r in train)
    assert max(r["trl"]["sampling/sampling_logp_difference/mean"] for r in train) < 0.02  # the server follows
    trainer_log = (attempt / "trainer.log").read_text()
    assert "columns question, answer, prompt, solution" in trainer_log, trainer_log[-2000:]  # mapped in the job
    print(f"\nMEASURED vllm entrypoint on CPU: 4 steps, weight sync {[round(r['weight_sync_s'], 3) for r in train]} "
          f"s, logp difference max {max(r['trl']['sampling/sampling_logp_difference/mean'] for r in train):.4f}")
    assert json.loads((attempt / "result.json").read_text())["state"] == "COMPLETED"
