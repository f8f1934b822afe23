"""launcher.train on CPU with the real TRL (training without vLLM, trainer.use_vllm=false; the preflight's
failure paths), the trainer step's decisions, and launcher.jobfolder.progress as the trainer writes it.

Each run is a subprocess, as in the job: `python -m launcher.components.trainer_step` (which decides the
device and preflight vs training, then execs the trainer) or `python -m launcher.train` with the
environment that step passes on. The job folder holds only plan.json: the trainer reads nothing else.
Helpers: tests/train_fixtures.py; the smoke assets: conftest's smoke_assets_local.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import PYTHON, REPO
from launcher.jobfolder import progress
from launcher.jobfolder.records import ServerReady, write_server_ready
from launcher.node import free_port
from train_fixtures import (CPU_TRAINING, explain, job_env, need_training_stack, run_train, run_trainer_step,
                            smoke_plan, write_job)


# ----------------------------------------------------------------------------- progress.py


def test_progress_heartbeat_roundtrip(tmp_path):
    assert progress.read_heartbeat(tmp_path) is None
    assert progress.heartbeat_age(tmp_path) is None
    beat = progress.write_heartbeat(tmp_path, progress.TrainerPhase.STEP, 3, stage="end", pid=-1)  # core keys win
    read = progress.read_heartbeat(tmp_path)
    assert (read.phase, read.step, read.time, read.pid, read.host) == (
        "step", 3, beat["time"], beat["pid"], beat["host"])
    assert read.get("stage") == "end" and read.pid == os.getpid() and read.host
    assert 0 <= progress.heartbeat_age(tmp_path) < 5
    progress.write_heartbeat(tmp_path, "done")
    assert progress.read_heartbeat(tmp_path).done and progress.read_heartbeat(tmp_path).step is None
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
    assert not progress.checkpoint_requested(tmp_path)
    progress.request_checkpoint(tmp_path, "walltime")
    assert progress.checkpoint_requested(tmp_path)
    assert progress.read_checkpoint_done(tmp_path) is None
    progress.write_json_atomic(tmp_path / progress.CHECKPOINT_DONE, {"step": 4, "checkpoint": "x"})
    assert progress.read_checkpoint_done(tmp_path)["step"] == 4


def test_heartbeats_and_metrics_are_written_off_the_training_thread(tmp_path):
    from launcher.train.report import HeartbeatWriter

    beat = HeartbeatWriter(tmp_path, enabled=True)
    beat(progress.TrainerPhase.STEP, 1, stage="begin")
    beat.metrics({"step": 1, "loss": 0.5})
    deadline = time.monotonic() + 30  # the writer thread writes them without another call from the trainer
    while (progress.read_heartbeat(tmp_path) is None or not progress.read_metrics(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert progress.read_heartbeat(tmp_path).step == 1 and progress.read_metrics(tmp_path)[0]["loss"] == 0.5
    for step in range(2, 300):
        beat(progress.TrainerPhase.STEP, step, stage="end")
        beat.metrics({"step": step})
    beat(progress.TrainerPhase.DONE, 299, reason="finished")  # terminal: on disk, after every row, on return
    assert progress.read_heartbeat(tmp_path).done and progress.read_heartbeat(tmp_path).get("reason") == "finished"
    assert [r["step"] for r in progress.read_metrics(tmp_path)] == list(range(1, 300))
    beat.flush()  # what the writer thread would do next: nothing is left to write over the terminal beat
    assert progress.read_heartbeat(tmp_path).done and beat.last_step() == 299
    assert sorted(p.name for p in tmp_path.iterdir()) == [progress.HEARTBEAT, progress.METRICS]
    quiet = HeartbeatWriter(tmp_path / "rank1", enabled=False)  # ranks other than 0 write nothing
    quiet(progress.TrainerPhase.DONE)
    quiet.metrics({"step": 1})
    assert not (tmp_path / "rank1").exists()


# ----------------------------------------------------------------------------- helpers (no training)


def test_hook_weight_sync_wraps_and_reports():
    from launcher.train.callback import hook_weight_sync

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


def test_tokens_formula():
    from launcher.train.metrics import completions_per_step, mean_std, metrics_row

    args = SimpleNamespace(per_device_train_batch_size=4, world_size=2, gradient_accumulation_steps=3,
                           num_iterations=2)
    assert completions_per_step(args) == 12  # 4 x 2 x 3 / 2
    row = metrics_row({"loss": 0.1, "reward": 0.5, "completions/mean_length": 10.0}, 7, [2.0, 4.0], [0.5], 12)
    assert row["step"] == 7 and row["step_time_s"] == 3.0
    assert row["tokens_per_s"] == pytest.approx(12 * 10.0 / 3.0)
    assert row["weight_sync_s"] == 0.5 and row["trl"]["loss"] == 0.1
    assert metrics_row({"loss": 0.1, "completions/mean_length": float("nan")}, 1, [1.0], [], 2)["tokens_per_s"] is None
    assert mean_std([]) == (None, None) and mean_std([2.0]) == (2.0, 0.0) and mean_std([1.0, 3.0])[1] == pytest.approx(2 ** 0.5)


def test_the_job_comes_from_the_environment(tmp_path, smoke_assets_local):
    from launcher.train.errors import JobError
    from launcher.train.job import folders, load_job

    job = tmp_path / "job"
    write_job(job, *CPU_TRAINING, "grpo.output_dir='{attempt_dir}/out'")
    env = {"LAUNCHER_JOB_DIR": str(job), "LAUNCHER_DEVICE": "cpu"}
    loaded = load_job(folders(env), env)
    assert loaded.attempt_dir == job / "attempt-1" and loaded.device == "cpu" and loaded.use_cpu
    assert loaded.grpo["output_dir"] == loaded.output_dir == f"{job}/attempt-1/out"
    assert not loaded.server_mode and loaded.server_url is None and loaded.plan.model.name_or_path.endswith("model")
    env["LAUNCHER_ATTEMPT_DIR"] = str(tmp_path / "a2")
    assert load_job(folders(env), env).output_dir == f"{tmp_path}/a2/out"
    with pytest.raises(JobError, match="LAUNCHER_JOB_DIR"):
        folders({})
    with pytest.raises(JobError, match="LAUNCHER_DEVICE is not set and plan.device is 'auto'"):
        load_job(folders(env), {})  # "auto" is decided by the trainer step, never here
    with pytest.raises(JobError, match="none of cuda, cpu"):
        load_job(folders(env), {"LAUNCHER_DEVICE": "tpu"})


def test_the_trainer_step_decides_device_and_preflight_once(monkeypatch, smoke_assets_local):
    import launcher.node
    from launcher.components.common import decide_device
    from launcher.components.trainer_step import PLAIN, PLAN_PREFLIGHT, NodeRun, node_run, preflight_reason

    server_plan, cpu_training = smoke_plan(), smoke_plan(*CPU_TRAINING)
    for gpus, device in ((0, "cpu"), (2, "cuda")):
        monkeypatch.setattr(launcher.node, "gpu_count", lambda gpus=gpus: gpus)
        env: dict[str, str] = {}
        assert decide_device(server_plan, env) == device and env == {"LAUNCHER_DEVICE": device}
    assert decide_device(smoke_plan("device=cpu"), {}) == "cpu"  # no probe: the plan says cpu
    assert preflight_reason(server_plan, "cpu") is None  # trains: the weights reach the server over gloo
    assert node_run(server_plan, "cpu", 0, None) == NodeRun(PLAIN, "trainer: no CUDA device here, training on CPU, "
                                                     "generating through the server, weights synced to it over "
                                                     "gloo (launcher.sync)")
    assert preflight_reason(server_plan, "cuda") is None
    assert preflight_reason(cpu_training, "cpu") is None  # GRPO on CPU, generation inside the trainer
    assert preflight_reason(smoke_plan("trainer.preflight=true"), "cuda") == PLAN_PREFLIGHT


def test_the_server_wrapper_fills_host_and_port():
    from launcher.components.serve import server_argv

    argv = server_argv(["trl", "vllm-serve", "--host", "{host}", "--port", "{port}"], "10.0.0.5", 4321, "/x/python")
    assert argv[1:] == ["vllm-serve", "--host", "10.0.0.5", "--port", "4321"]


def test_unusable_jobs_exit_2(tmp_path, smoke_assets_local):
    proc, attempt = run_train(tmp_path, "attempt-1", device="")  # no plan.json here
    assert proc.returncode == 2, explain(proc)
    assert "plan.json does not exist" in proc.stderr
    beat = progress.read_heartbeat(attempt)
    assert beat.phase == "failed" and beat.get("exit_code") == 2
    proc, _ = run_train(tmp_path, "attempt-1", LAUNCHER_JOB_DIR="")
    assert proc.returncode == 2 and "LAUNCHER_JOB_DIR is not set" in proc.stderr, explain(proc)
    proc, _ = run_train(tmp_path, "attempt-1", str(tmp_path))  # the job folder never comes as an argument
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr, explain(proc)


# ----------------------------------------------------------------------------- the real TRL on CPU


def test_trainer_step_trains_two_steps_on_cpu(tmp_path, smoke_assets_local):
    need_training_stack()
    job = tmp_path / "job"
    write_job(job, *CPU_TRAINING, "grpo.max_steps=2", "grpo.save_steps=2")
    proc, attempt = run_trainer_step(job, "attempt-1")
    assert proc.returncode == 0, explain(proc)

    lines = proc.stdout.splitlines()
    assert lines[0] == "trainer: no CUDA device here, training on CPU with generation inside the trainer"
    assert lines[1].startswith("trainer: exec ") and lines[1].endswith(" -u -m launcher.train")
    first = lines[2]
    assert first.startswith("[launcher.train] job smoke: TRAIN")
    assert "output_dir" in first and "processes 1" in first and "server none" in first and ", CPU |" in first

    train_rows = [r for r in progress.read_metrics(attempt) if r.get("kind") == "train"]
    assert [r["step"] for r in train_rows] == [1, 2]
    for row in train_rows:
        for key in ("loss", "reward", "reward_std", "step_time_s", "completion_mean_length", "tokens_per_s",
                    "learning_rate"):
            assert key in row, key
        assert row["step_time_s"] > 0 and row["completions_per_step"] == 2
        assert row["tokens_per_s"] == pytest.approx(2 * row["completion_mean_length"] / row["step_time_s"])

    beat = progress.read_heartbeat(attempt)
    assert beat.phase == "done" and beat.step == 2 and beat.get("reason") == "finished"

    versions = json.loads((attempt / progress.VERSIONS).read_text())
    assert versions["trl"].startswith("1.16.") and versions["device"] == "cpu" and versions["cuda_devices"] == []
    assert set(versions) >= {"launcher", "trl", "vllm", "torch", "transformers", "accelerate", "datasets",
                             "python", "host", "cuda_devices"}

    out = job / "output"
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    assert (out / "model.safetensors").is_file()
    assert not (attempt / progress.CHECKPOINT_DONE).exists()
    assert sorted(p.name for p in job.iterdir()) == ["attempt-1", "output", "plan.json"]


def test_checkpoint_request_then_resume(tmp_path, smoke_assets_local):
    need_training_stack()
    job = tmp_path / "job"
    write_job(job, *CPU_TRAINING, "grpo.max_steps=5", "grpo.save_steps=100")

    progress.request_checkpoint(job / "attempt-1", "test")
    proc, attempt = run_train(job, "attempt-1")
    assert proc.returncode == 0, explain(proc)
    assert "stopped for a checkpoint at step 1" in proc.stdout
    done = progress.read_checkpoint_done(attempt)
    assert done is not None and done["step"] == 1
    assert Path(done["checkpoint"]) == job / "output" / "checkpoint-1"
    assert (job / "output" / "checkpoint-1" / "trainer_state.json").is_file()
    assert [r["step"] for r in progress.read_metrics(attempt) if r.get("kind") == "train"] == [1]
    beat = progress.read_heartbeat(attempt)
    assert beat.phase == "done" and beat.get("reason") == "checkpoint" and beat.step == 1

    proc, attempt = run_train(job, "attempt-2")
    assert proc.returncode == 0, explain(proc)
    assert f"resuming from checkpoint {job / 'output' / 'checkpoint-1'}" in proc.stdout
    assert [r["step"] for r in progress.read_metrics(attempt) if r.get("kind") == "train"] == [2, 3, 4, 5]
    assert progress.read_heartbeat(attempt).phase == "done"
    assert not (attempt / progress.CHECKPOINT_DONE).exists()
    assert json.loads((job / "output" / "trainer_state.json").read_text())["global_step"] == 5


def test_preflight_on_cpu_fails_cleanly_without_a_server(tmp_path, smoke_assets_local):
    """trainer.preflight=true on a node without CUDA: the step passes it on; with nothing listening at the
    server URL the preflight fails with exit 3 after vllm_server_timeout."""
    need_training_stack()
    job = tmp_path / "job"
    write_job(job, "+grpo.vllm_server_timeout=2", "trainer.preflight=true")
    url = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    proc, attempt = run_trainer_step(job, "attempt-1", LAUNCHER_SERVER_URL=url)
    assert proc.returncode == 3, explain(proc)
    lines = proc.stdout.splitlines()
    assert lines[0].endswith("-m launcher.train --preflight=trainer.preflight=true"), proc.stdout
    assert lines[1].startswith(f"[launcher.train] job smoke: PREFLIGHT (trainer.preflight=true) | server {url}")
    assert f"preflight failed: the vLLM server at {url} is not healthy after 2 s" in proc.stderr
    beat = progress.read_heartbeat(attempt)
    assert beat.phase == "failed" and beat.get("exit_code") == 3
    assert not (attempt / progress.PREFLIGHT).exists()


def test_without_a_handover_the_trainer_waits_at_most_the_startup_timeout(tmp_path, smoke_assets_local):
    """No LAUNCHER_SERVER_URL and no supervisor writing server_ready.json: bounded by server.startup_timeout_s."""
    need_training_stack()
    job = tmp_path / "job"
    write_job(job, "server.startup_timeout_s=3")
    proc, attempt = run_train(job, "attempt-1", "--preflight")
    assert proc.returncode == 2, explain(proc)
    assert "no server address after server.startup_timeout_s=3 s" in proc.stderr
    assert "set LAUNCHER_SERVER_URL" in proc.stderr
    beat = progress.read_heartbeat(attempt)
    assert beat.phase == "failed" and beat.get("exit_code") == 2


def wait_heartbeat(attempt: Path, phase: str, proc: subprocess.Popen, timeout_s: float = 300) -> progress.Heartbeat:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        beat = progress.read_heartbeat(attempt)
        if beat is not None and beat.phase == phase:
            return beat
        time.sleep(0.1)
    out, err = proc.communicate(timeout=60) if proc.poll() is not None else ("", "")
    raise AssertionError(f"no heartbeat {phase!r} (rc {proc.returncode})\n{out[-3000:]}\n{err[-3000:]}")


def test_the_preflight_prepares_then_waits_for_the_handover(tmp_path, smoke_assets_local):
    """The overlapped start on the trainer's side: tokenizer, data and rewards loaded, then phase
    waiting_for_server until server_ready.json names the server; the trainer then uses that address."""
    need_training_stack()
    job = tmp_path / "job"
    write_job(job, "+grpo.vllm_server_timeout=2", "trainer.preflight=true")
    attempt = job / "attempt-1"
    proc = subprocess.Popen([PYTHON, "-u", "-m", "launcher.components.trainer_step"], cwd=REPO, text=True,
                            env=job_env(job, attempt), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        beat = wait_heartbeat(attempt, "waiting_for_server", proc)
        assert beat.get("prepared_s") > 0 and proc.poll() is None
        url = f"http://127.0.0.1:{free_port('127.0.0.1')}"  # nothing listens: the preflight's check fails
        write_server_ready(attempt, ServerReady(url=url, host="here", healthy_after_s=12.5, time=time.time()))
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 3, f"{out[-3000:]}\n{err[-3000:]}"
    assert "server from the supervisor once healthy (server_ready.json)" in out
    assert "waiting for the server's address (server_ready.json)" in out
    assert f"server ready at {url} (healthy after 12.5 s)" in out
    assert f"preflight failed: the vLLM server at {url} is not healthy after 2 s" in err


@pytest.mark.parametrize("broken, message", [
    ("reward.funcs=[no_such_module.reward]", "reward function 'no_such_module.reward': no importable module"),
    ("data.name_or_path={tmp}/questions.jsonl",  # checked in the job too (a hub dataset's only check)
     "data.prompt_column: the dataset {tmp}/questions.jsonl has no column 'prompt' (its columns: question, solution)"),
])
def test_a_trainer_that_fails_while_preparing_never_waits(tmp_path, smoke_assets_local, broken, message):
    """Fail fast: what breaks while preparing ends the trainer before it waits for any server
    (server.startup_timeout_s is 600 s here: a waiting trainer would outlast the test's timeout)."""
    need_training_stack()
    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"prompt": "What is 2 + 2?", "solution": "4"}\n')  # passes the check before queueing
    job = tmp_path / "job"
    write_job(job, broken.format(tmp=tmp_path))
    # then the columns change under the queued job (as a hub dataset's are only known in the job)
    questions.write_text('{"question": "What is 2 + 2?", "solution": "4"}\n')
    proc, attempt = run_trainer_step(job, "attempt-1", timeout=300)
    assert proc.returncode == 2, explain(proc)
    assert message.format(tmp=tmp_path) in proc.stderr and "waiting for the server" not in proc.stdout
    assert progress.read_heartbeat(attempt).phase == "failed"
