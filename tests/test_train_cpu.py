"""launcher.train on CPU without vLLM (trainer.use_vllm=false), and launcher.progress.

The training tests need the smoke assets (python scripts/make_smoke_assets.py) and TRL; they are
skipped when either is missing. Each run is a subprocess `python -m launcher.train <job_dir>`, as
the launcher runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.jobfolder import progress

ROOT = Path(__file__).resolve().parents[1]
SMOKE = Path(os.environ.get("LAUNCHER_CACHE", str(Path.home() / ".cache" / "launcher"))) / "smoke"
FAST = ["trainer.use_vllm=false", "grpo.num_generations=2", "grpo.per_device_train_batch_size=2",
        "grpo.gradient_accumulation_steps=1", "grpo.max_completion_length=8", "grpo.logging_steps=1"]


# ----------------------------------------------------------------------------- progress.py


def test_progress_heartbeat_roundtrip(tmp_path):
    assert progress.read_heartbeat(tmp_path) is None
    assert progress.heartbeat_age(tmp_path) is None
    beat = progress.write_heartbeat(tmp_path, "step", 3, stage="end", pid=-1)  # core keys win
    read = progress.read_heartbeat(tmp_path)
    assert read == beat
    assert read["phase"] == "step" and read["step"] == 3 and read["stage"] == "end"
    assert read["pid"] == os.getpid() and read["host"] and isinstance(read["time"], float)
    assert 0 <= progress.heartbeat_age(tmp_path) < 5
    progress.write_heartbeat(tmp_path, "done")
    assert progress.read_heartbeat(tmp_path)["phase"] == "done"
    assert progress.read_heartbeat(tmp_path)["step"] is None
    # atomic: no temp files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == [progress.HEARTBEAT]
    (tmp_path / progress.HEARTBEAT).write_text("{not json")
    assert progress.read_heartbeat(tmp_path) is None


def test_progress_metrics(tmp_path):
    assert progress.read_metrics(tmp_path) == []
    progress.append_metrics(tmp_path, {"step": 1, "loss": 0.5, "reward": float("nan")})
    progress.append_metrics(tmp_path, {"step": 2, "time": 123.0})
    with open(tmp_path / progress.METRICS, "a") as f:
        f.write('{"step": 3, "tor')  # a row torn by a crash is skipped
    rows = progress.read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["reward"] is None and isinstance(rows[0]["time"], float)
    assert rows[1]["time"] == 123.0
    for line in (tmp_path / progress.METRICS).read_text().splitlines()[:2]:
        json.loads(line)  # strict JSON (NaN written as null)


def test_progress_checkpoint_handshake(tmp_path):
    assert progress.CHECKPOINT_REQUEST == "checkpoint.request"
    assert progress.CHECKPOINT_DONE == "checkpoint.done"
    assert not progress.checkpoint_requested(tmp_path)
    progress.request_checkpoint(tmp_path, "walltime")
    assert progress.checkpoint_requested(tmp_path)
    assert progress.read_checkpoint_done(tmp_path) is None
    progress.write_json_atomic(tmp_path / progress.CHECKPOINT_DONE, {"step": 4, "checkpoint": "x"})
    assert progress.read_checkpoint_done(tmp_path)["step"] == 4


def test_progress_imports_nothing_heavy():
    code = ("import sys, launcher.jobfolder.progress; heavy = {'torch', 'trl', 'transformers', 'datasets', 'vllm', "
            "'accelerate', 'numpy'} & set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ----------------------------------------------------------------------------- train.py helpers (no TRL)


def test_hook_weight_sync_wraps_and_reports():
    from launcher.train.training import hook_weight_sync

    events = []

    class FakeGeneration:
        def sync_weights(self):
            events.append("sync")
            return "synced"

    gen = FakeGeneration()
    assert hook_weight_sync(gen, lambda: events.append("before"), lambda s, ok: events.append(("after", ok)))
    assert not hook_weight_sync(gen, lambda: None, lambda s, ok: None)  # never wrapped twice
    assert gen.sync_weights() == "synced"
    assert events == ["before", "sync", ("after", True)]

    class Failing:
        def sync_weights(self):
            raise RuntimeError("nccl")

    failing, events = Failing(), []
    hook_weight_sync(failing, lambda: events.append("before"), lambda s, ok: events.append(("after", ok)))
    with pytest.raises(RuntimeError):
        failing.sync_weights()
    assert events == ["before", ("after", False)]


def test_fill_placeholders_and_tokens_formula():
    from types import SimpleNamespace

    from launcher.train.training import completions_per_step, fill_placeholders, metrics_row

    grpo = {"output_dir": "{job_dir}/output", "logging_dir": "{attempt_dir}/tb", "n": 3, "l": ["{job_dir}"]}
    filled = fill_placeholders(grpo, {"{job_dir}": "/j", "{attempt_dir}": "/j/attempt-2"})
    assert filled == {"output_dir": "/j/output", "logging_dir": "/j/attempt-2/tb", "n": 3, "l": ["/j"]}
    args = SimpleNamespace(per_device_train_batch_size=4, world_size=2, gradient_accumulation_steps=3,
                           num_iterations=2)
    assert completions_per_step(args) == 12  # 4 x 2 x 3 / 2
    row = metrics_row({"loss": 0.1, "reward": 0.5, "completions/mean_length": 10.0}, 7, [2.0, 4.0], [0.5], 12)
    assert row["step"] == 7 and row["step_time_s"] == 3.0
    assert row["tokens_per_s"] == pytest.approx(12 * 10.0 / 3.0)
    assert row["weight_sync_s"] == 0.5 and row["trl"]["loss"] == 0.1


def test_bad_job_dir_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "launcher.train", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "config.yaml" in proc.stderr


# ----------------------------------------------------------------------------- training (TRL, CPU)


def _need_training_stack():
    pytest.importorskip("trl")
    pytest.importorskip("math_verify")
    if not (SMOKE / "model" / "config.json").is_file() or not (SMOKE / "data" / "train.jsonl").is_file():
        pytest.skip(f"smoke assets missing in {SMOKE}: python scripts/make_smoke_assets.py")


def write_job(job_dir: Path, overrides: list[str]) -> dict:
    """config.yaml + plan.json as the launcher writes them, from the composed Hydra config."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from launcher.config.compose import to_plain_dict
    from launcher.plan.plan import build_plan
    from launcher.config.schema import register

    register()
    with initialize_config_module("launcher.conf", version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=smoke", "cluster=local", *FAST, *overrides])
    plain = to_plain_dict(cfg)
    job_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(plain), job_dir / "config.yaml")
    plan = build_plan(plain)
    (job_dir / "plan.json").write_text(plan.to_json())
    return plain


def run_train(job_dir: Path, attempt: str, timeout: int = 420) -> tuple[subprocess.CompletedProcess, Path]:
    attempt_dir = job_dir / attempt
    env = dict(os.environ, LAUNCHER_ATTEMPT_DIR=str(attempt_dir), CUDA_VISIBLE_DEVICES="",
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.pop("LAUNCHER_SERVER_URL", None)
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "launcher.train", str(job_dir)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    print(f"launcher.train {attempt}: rc {proc.returncode} in {time.time() - start:.1f} s")
    return proc, attempt_dir


def _explain(proc: subprocess.CompletedProcess) -> str:
    return f"rc={proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}"


def test_train_two_steps(tmp_path):
    _need_training_stack()
    job = tmp_path / "job"
    write_job(job, ["grpo.max_steps=2", "grpo.save_steps=2"])
    proc, attempt = run_train(job, "attempt-1")
    assert proc.returncode == 0, _explain(proc)

    first = proc.stdout.splitlines()[0]
    assert "TRAIN" in first and "output_dir" in first and "processes 1" in first and "server none" in first

    train_rows = [r for r in progress.read_metrics(attempt) if r.get("kind") == "train"]
    assert [r["step"] for r in train_rows] == [1, 2]
    for row in train_rows:
        for key in ("loss", "reward", "reward_std", "step_time_s", "completion_mean_length", "tokens_per_s",
                    "learning_rate"):
            assert key in row, key
        assert row["step_time_s"] > 0 and row["completions_per_step"] == 2
        assert row["tokens_per_s"] == pytest.approx(2 * row["completion_mean_length"] / row["step_time_s"])

    beat = progress.read_heartbeat(attempt)
    assert beat["phase"] == "done" and beat["step"] == 2 and beat["reason"] == "finished"

    versions = json.loads((attempt / "versions.json").read_text())
    assert versions["trl"].startswith("1.16.")
    assert set(versions) >= {"launcher", "trl", "vllm", "torch", "transformers", "accelerate", "datasets",
                             "python", "host", "cuda_devices"}

    out = job / "output"
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    assert (out / "model.safetensors").is_file()
    assert not (attempt / progress.CHECKPOINT_DONE).exists()


def test_checkpoint_request_then_resume(tmp_path):
    _need_training_stack()
    job = tmp_path / "job"
    write_job(job, ["grpo.max_steps=5", "grpo.save_steps=100"])

    first_attempt = job / "attempt-1"
    progress.request_checkpoint(first_attempt, "test")
    proc, attempt = run_train(job, "attempt-1")
    assert proc.returncode == 0, _explain(proc)
    assert "stopped for a checkpoint at step 1" in proc.stdout
    done = progress.read_checkpoint_done(attempt)
    assert done is not None and done["step"] == 1
    assert Path(done["checkpoint"]) == job / "output" / "checkpoint-1"
    assert (job / "output" / "checkpoint-1" / "trainer_state.json").is_file()
    assert [r["step"] for r in progress.read_metrics(attempt) if r.get("kind") == "train"] == [1]
    beat = progress.read_heartbeat(attempt)
    assert beat["phase"] == "done" and beat["reason"] == "checkpoint" and beat["step"] == 1

    proc, attempt = run_train(job, "attempt-2")
    assert proc.returncode == 0, _explain(proc)
    assert f"resuming from checkpoint {job / 'output' / 'checkpoint-1'}" in proc.stdout
    assert [r["step"] for r in progress.read_metrics(attempt) if r.get("kind") == "train"] == [2, 3, 4, 5]
    assert progress.read_heartbeat(attempt)["phase"] == "done"
    assert not (attempt / progress.CHECKPOINT_DONE).exists()
    assert json.loads((job / "output" / "trainer_state.json").read_text())["global_step"] == 5
