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
