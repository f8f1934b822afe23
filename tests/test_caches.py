"""The server's shared compile caches (launcher/components/caches.py): where they go, what keys them, and that
the server wrapper really hands them to vLLM."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from conftest import PYTHON, REPO, compose
from launcher.components.caches import CACHE_VARS, cache_env, cache_key, flag_value
from launcher.plan.build import build_plan

VERSIONS = {"vllm": "0.31.0+cpu", "torch": "2.13.0+cpu", "triton": "3.6.0"}


def plan(tmp_path: Path, *overrides: str):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    return build_plan(compose("+experiment=deepmath", "cluster=local", f"cluster.job_root={tmp_path}/jobs",
                              f"model.name_or_path={model}", f"data.name_or_path={tmp_path}", *overrides))


def test_the_caches_default_to_the_job_root_and_follow_cluster_cache_dir(tmp_path):
    assert plan(tmp_path).cache_dir == os.path.realpath(tmp_path / "jobs" / ".cache")
    assert plan(tmp_path, f"cluster.cache_dir={tmp_path}/shared").cache_dir == str(tmp_path / "shared")


def test_jobs_with_the_same_model_versions_and_parallelism_share_one_folder(tmp_path):
    base = cache_key(plan(tmp_path), "cuda", VERSIONS)
    # a sweep point or a requeued attempt: other training settings, same server
    assert cache_key(plan(tmp_path, "grpo.learning_rate=3e-6", "+grpo.seed=7", "server.gpu_memory_utilization=0.5"),
                     "cuda", VERSIONS) == base
    assert base.startswith("model-")
    others = {cache_key(plan(tmp_path, "server.tensor_parallel_size=2", "server.gpus_per_node=2"), "cuda", VERSIONS),
              cache_key(plan(tmp_path, "server.data_parallel_size=2", "server.gpus_per_node=2"), "cuda", VERSIONS),
              cache_key(plan(tmp_path, "model.revision=v2"), "cuda", VERSIONS),
              cache_key(plan(tmp_path), "cpu", VERSIONS),
              cache_key(plan(tmp_path), "cuda", {**VERSIONS, "vllm": "0.26.0"}),
              cache_key(plan(tmp_path), "cuda", {**VERSIONS, "torch": "2.11.0"})}
    assert base not in others and len(others) == 6


def test_the_environment_wins(tmp_path):
    p = plan(tmp_path)
    env = cache_env(p, "cuda", {"TRITON_CACHE_DIR": "/mine"}, VERSIONS)
    folder = Path(p.cache_dir) / "compile" / cache_key(p, "cuda", VERSIONS)
    assert env == {"VLLM_CACHE_ROOT": str(folder / "vllm"), "TORCHINDUCTOR_CACHE_DIR": str(folder / "inductor")}
    assert flag_value(["--tensor-parallel-size=4"], "tensor_parallel_size") == "4"
    assert flag_value(["--tensor_parallel_size", "2"], "tensor_parallel_size") == "2"


def test_the_server_wrapper_hands_the_caches_to_vllm(tmp_path, smoke_assets_local):
    """The wrapper as the supervisor starts it, with `trl` replaced by a stand-in that prints its environment."""
    job, attempt, bin_dir = tmp_path / "job", tmp_path / "job" / "attempt-1", tmp_path / "bin"
    bin_dir.mkdir()
    fake_trl = bin_dir / "trl"  # `trl` is taken from beside the job's Python
    fake_trl.write_text("#!/bin/sh\nenv\n")
    fake_trl.chmod(0o755)
    p = build_plan(compose("+experiment=smoke", "cluster=local", f"cluster.job_root={tmp_path}/jobs"),
                   python=str(bin_dir / "python"))
    attempt.mkdir(parents=True)
    (job / "plan.json").write_text(p.to_json())
    env = dict(os.environ, LAUNCHER_JOB_DIR=str(job), LAUNCHER_ATTEMPT_DIR=str(attempt), LAUNCHER_BACKEND="local",
               CUDA_VISIBLE_DEVICES="")
    for var in CACHE_VARS.values():
        env.pop(var, None)
    env.pop("LAUNCHER_SERVER_TOKEN", None)
    unprotected = subprocess.run([PYTHON, "-m", "launcher.components.serve"], cwd=REPO, env=env, capture_output=True,
                                 text=True, timeout=120)
    assert unprotected.returncode == 2 and "refusing to serve unprotected" in unprotected.stderr  # no token, no server
    env["LAUNCHER_SERVER_TOKEN"] = "token-from-the-supervisor"
    out = subprocess.run([PYTHON, "-m", "launcher.components.serve"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    seen = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line and not line.startswith(" "))
    folder = Path(p.cache_dir) / "compile"
    for var in CACHE_VARS.values():
        assert Path(seen[var]).parent.parent == folder, (var, seen.get(var))
    record = json.loads(next(attempt.glob("node-server-*.json")).read_text())
    assert record["caches"]["VLLM_CACHE_ROOT"] == seen["VLLM_CACHE_ROOT"]
