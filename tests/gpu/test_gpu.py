"""GPU proof as tests (`pytest -m gpu tests/gpu`; deselected by default and in CI).

Needs 2 NVIDIA GPUs for server mode (NCCL refuses server and trainer on one GPU), 1 for colocate, the
`train` and `vllm` extras, and the smoke assets (scripts/make_smoke_assets.py). The same steps, with
timings, run on the offline H200 machine through scripts/gpu/prove (docs/gpu.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.validate.facts import local_gpu_count
from launcher.jobfolder.progress import read_heartbeat, read_metrics

pytestmark = pytest.mark.gpu


def launch(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "launcher", "+experiment=smoke", "cluster=local",
            f"cluster.job_root={tmp_path}/jobs", f"grpo.output_dir={tmp_path}/out", *overrides]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def attempt_of(tmp_path: Path) -> Path:
    return sorted(tmp_path.glob("jobs/smoke/*/attempt-1"))[-1]


def gpu_processes() -> str:
    return subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"], capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def two_gpus():
    if local_gpu_count() < 2:
        pytest.fail("server mode needs 2 GPUs (server and trainer on distinct GPUs)")


def test_server_mode_trains_with_weight_sync(tmp_path, two_gpus):
    proc = launch(tmp_path)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    attempt = attempt_of(tmp_path)
    steps = [m["step"] for m in read_metrics(attempt) if m.get("kind") == "train"]
    assert steps[-1] >= 5
    assert "POST /update_weights HTTP/1.1\" 200" in (attempt / "server.log").read_text()
    assert "server stopped (trainer ended)" in (attempt / "supervisor.log").read_text()
    assert gpu_processes() == ""


def test_server_killed_mid_training_ends_job_fast(tmp_path, two_gpus):
    proc = launch(tmp_path, "grpo.max_steps=100000", "grpo.save_steps=100000")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        found = list(tmp_path.glob("jobs/smoke/*/attempt-1"))
        if found and ((read_heartbeat(found[0]) or {}).get("step") or 0) >= 3:
            break
        time.sleep(0.5)
    attempt = attempt_of(tmp_path)
    os.kill(json.loads((attempt / "server.json").read_text())["pid"], signal.SIGKILL)
    killed = time.monotonic()
    proc.communicate(timeout=60)
    assert time.monotonic() - killed < 15
    assert json.loads((attempt / "result.json").read_text())["state"] == "FAILED"
    assert gpu_processes() == ""


def test_colocate_on_one_gpu(tmp_path):
    if local_gpu_count() < 1:
        pytest.fail("needs a GPU")
    proc = launch(tmp_path, "mode=colocate", "trainer.gpus=[0]", "grpo.max_steps=3",
                  "+grpo.vllm_gpu_memory_utilization=0.3", "+grpo.vllm_max_model_length=512")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    steps = [m["step"] for m in read_metrics(attempt_of(tmp_path)) if m.get("kind") == "train"]
    assert steps[-1] == 3


def test_a_second_colocate_job_starts_with_warm_vllm_caches(tmp_path):
    """Colocate: vLLM runs inside the trainer, which gets VLLM_CACHE_ROOT (and Triton's, Inductor's) under
    cluster.cache_dir, keyed by model, versions, layout and the engine's TP/DP (launcher/components/caches.py).
    The first job compiles into it; the second job, same settings, finds everything there and compiles nothing
    new (vLLM's INFO lines do not reach the colocate trainer's log, so the cache's files are the evidence). The
    environment's own cache variables would win: they are unset. scripts/gpu/prove colocate-caches runs the same."""
    if local_gpu_count() < 1:
        pytest.fail("needs a GPU")
    env = {k: v for k, v in os.environ.items()
           if k not in ("VLLM_CACHE_ROOT", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR")}
    cache = tmp_path / "shared-caches"
    seen = []
    for run in ("cold", "warm"):
        root = tmp_path / run
        argv = [sys.executable, "-m", "launcher", "+experiment=smoke", "cluster=local", f"cluster.job_root={root}/jobs",
                f"grpo.output_dir={root}/out", f"cluster.cache_dir={cache}", "mode=colocate", "trainer.gpus=[0]",
                "grpo.max_steps=2", "+grpo.vllm_gpu_memory_utilization=0.3", "+grpo.vllm_max_model_length=512"]
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stdout
        record = json.loads(next(attempt_of(root).glob("node-trainer-*.json")).read_text())
        assert set(record["caches"]) == {"VLLM_CACHE_ROOT", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"}
        vllm_root = record["caches"]["VLLM_CACHE_ROOT"]
        assert vllm_root.startswith(f"{cache}/compile/") and "-trainer-" in vllm_root
        compiled = sorted(str(p) for p in (cache / "compile").glob("*/vllm/torch_compile_cache/**/*") if p.is_file())
        seen.append((vllm_root, compiled))
    (cold_root, cold), (warm_root, warm) = seen
    assert cold_root == warm_root  # the same model, versions and layout: one folder
    assert cold and all(p.startswith(f"{cold_root}/torch_compile_cache/") for p in cold)  # the cold job compiled there
    assert warm == cold  # the warm job found it all: nothing compiled anew, in no other folder
