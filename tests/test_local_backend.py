"""The local backend end to end on CPU: the real vLLM CPU server + the trainer training through it (started
together: the overlapped start; its weights synced to the server over gloo, and a counter-test without), a trainer failing while the server starts, clean shutdown on SIGINT/SIGTERM, the job
folder's contents, and folders never written over."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PYTHON, compose
from launcher.jobfolder.layout import create_job_dir
from launcher.plan.build import build_plan
from launcher.jobfolder.progress import read_heartbeat

pytestmark = pytest.mark.vllm_cpu


def start(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    argv = [PYTHON, "-m", "launcher", "+experiment=smoke", "cluster=local", f"cluster.job_root={tmp_path}/jobs",
            "server.enforce_eager=true", *overrides]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                            start_new_session=True)


def job_dir_of(tmp_path: Path, timeout_s: float = 60) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = list((tmp_path / "jobs").glob("smoke/*/attempt-1"))
        if found:
            return found[0].parent
        time.sleep(0.2)
    raise AssertionError("no job folder")


def processes_of(job_dir: Path) -> list[str]:
    """Processes on this machine whose environment names this job (the components and their children)."""
    needle = f"LAUNCHER_JOB_DIR={job_dir}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(f"{proc.name} {(proc / 'cmdline').read_bytes()[:80]!r}")
        except OSError:
            continue
    return found


def wait_gone(job_dir: Path, timeout_s: float) -> list[str]:
    deadline = time.monotonic() + timeout_s
    left = processes_of(job_dir)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = processes_of(job_dir)
    return left


def train_rows(attempt: Path) -> list[dict]:
    return [json.loads(line) for line in (attempt / "metrics.jsonl").read_text().splitlines()
            if json.loads(line).get("kind") == "train"]


def logp_difference(rows: list[dict]) -> list[float]:
    """TRL's mean |logp(trainer) - logp(server)| of the sampled tokens, per step: small while the server
    samples with the trainer's weights."""
    return [r["trl"]["sampling/sampling_logp_difference/mean"] for r in rows]


def test_local_smoke_end_to_end_on_cpu(tmp_path, smoke_assets_local):
    """`python -m launcher +experiment=smoke cluster=local` trains through the real vLLM CPU server: the
    weights reach the server at every step (gloo, launcher.sync), the server's generations follow the
    trainer, the reward rises and the run ends with a summary."""
    proc = start(tmp_path)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert output.count("no CUDA device on this machine: the server runs on CPU (vllm-cpu) and the trainer trains "
                        "on CPU, its weights synced to the server over gloo") == 1
    summary = re.search(r"launcher: training: 30 steps in [\d.]+ s \(([\d.]+) steps/s\); reward ([\d.]+) \(first 6 "
                        r"steps\) -> ([\d.]+) \(last 6 steps\); weight sync ([\d.]+) s per step", output)
    assert summary, output[-3000:]
    match = re.search(r"job (local-\S+); job folder (\S+)", output)
    assert match, output
    job_dir = Path(match.group(2))
    # the snapshot
    for name in ("config.yaml", "plan.txt", "plan.json", "commands.txt", "git.txt", "submission.json"):
        assert (job_dir / name).is_file(), name
    assert "trl vllm-serve" in (job_dir / "commands.txt").read_text()
    assert "not a git repository" in (job_dir / "git.txt").read_text()  # launched from tmp_path
    attempt = job_dir / "attempt-1"
    for name in ("supervisor.log", "server.log", "trainer.log", "server.json", "versions.json", "result.json",
                 "metrics.jsonl"):
        assert (attempt / name).is_file(), name
    assert json.loads((attempt / "result.json").read_text())["state"] == "COMPLETED"
    # the server wrapper published where it listens; the trainer's preflight reached it there
    server = json.loads((attempt / "server.json").read_text())
    assert server["address"] == "127.0.0.1" and server["url"] == f"http://127.0.0.1:{server['port']}"
    rows = train_rows(attempt)
    assert [r["step"] for r in rows] == list(range(1, 31))
    rewards = [r["reward"] for r in rows]
    first, last = sum(rewards[:6]) / 6, sum(rewards[-6:]) / 6
    assert last > first + 0.1, rewards  # it learns (measured: 0.18 -> 0.65)
    assert all(r["grad_norm"] > 0 for r in rows) and all(r["weight_sync_s"] > 0 for r in rows)
    assert max(logp_difference(rows)) < 0.02, logp_difference(rows)  # the server follows (measured <= 0.005)
    print(f"\nMEASURED smoke on CPU: {summary.group(1)} steps/s, reward {first:.3f} -> {last:.3f}, weight sync "
          f"{summary.group(4)} s/step, logp difference max {max(logp_difference(rows)):.4f}")
    versions = json.loads((attempt / "versions.json").read_text())
    assert versions["trl"].startswith("1.16") and versions["device"] == "cpu"
    trainer_log = (attempt / "trainer.log").read_text()
    assert trainer_log.count("no CUDA device here") == 1  # the trainer step decided, once
    assert "generating through the server, weights synced to it over gloo" in trainer_log
    assert "weight sync to the server over gloo" in trainer_log
    assert "running vLLM on CPU" in (attempt / "server.log").read_text()
    assert '--weight-transfer-config \'{"backend": "launcher_gloo"}\'' in (attempt / "server.log").read_text()
    assert oct(job_dir.stat().st_mode & 0o777) == "0o700"
    assert wait_gone(job_dir, 10) == []


def test_without_weight_sync_the_server_drifts_from_the_trainer(tmp_path, smoke_assets_local):
    """The counter-test of "the server follows the trainer": the same run with the sync skipped
    (DEBUG_SKIP_WEIGHT_SYNC, launcher.sync) samples from the first weights while the trainer
    learns, and TRL's logp difference grows far past the synced run's bound."""
    proc = start(tmp_path, "grpo.max_steps=5", "+cluster.env.DEBUG_SKIP_WEIGHT_SYNC=1")
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    job_dir = Path(re.search(r"job folder (\S+)", output).group(1))
    difference = logp_difference(train_rows(job_dir / "attempt-1"))
    assert difference[0] < 0.02 and max(difference[2:]) > 0.05, difference  # measured: 0.002 -> 0.15 by step 4
    print(f"\nMEASURED without sync: logp difference {difference[0]:.4f} at step 1 -> {difference[-1]:.4f} at step 5")


# a reward module that the login node finds (validation passes) but that does not import on the nodes
MISSING_DEPENDENCY = "import no_such_dependency\n\n\ndef reward(completions, **kwargs):\n    return [0.0] * len(completions)\n"


def wait_json(path: Path, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    return json.loads(path.read_text())


def test_a_trainer_failing_while_the_server_starts_ends_the_job_at_once(tmp_path, smoke_assets_local):
    """Fail fast: the trainer starts with the server and fails while preparing (a reward function that does
    not import); the job ends then, with that reason, and the server is stopped. The server is frozen
    (SIGSTOP) as soon as it has published its address, so it cannot become healthy: nothing but the
    trainer's failure can end this job."""
    (tmp_path / "my_rewards.py").write_text(MISSING_DEPENDENCY)
    proc = start(tmp_path, "reward.funcs=[my_rewards.reward]", f"+cluster.env.PYTHONPATH={tmp_path}")
    job_dir = job_dir_of(tmp_path)
    attempt = job_dir / "attempt-1"
    os.kill(wait_json(attempt / "server.json")["pid"], signal.SIGSTOP)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, output
    result = json.loads((attempt / "result.json").read_text())
    assert (result["state"], result["cause"], result["trainer_rc"]) == ("FAILED", "trainer_failed", 1)
    first = result["reason"].splitlines()[0]
    assert first.startswith("trainer exited with code 1 while the server was starting: ModuleNotFoundError: "
                            "No module named 'no_such_dependency'"), first
    assert "server_healthy" not in result["timings"] and not (attempt / "server_ready.json").exists()
    assert "server stopped (trainer ended)" in (attempt / "supervisor.log").read_text()
    assert "waiting for the server" not in (attempt / "trainer.log").read_text()
    assert wait_gone(job_dir, 15) == []
    print(f"\nMEASURED trainer failed {result['timings']['trainer_ended']:.1f} s after the start; job ended")


def test_ctrl_c_stops_both_components_cleanly(tmp_path, smoke_assets_local):
    proc = start(tmp_path)
    job_dir = job_dir_of(tmp_path)
    deadline = time.monotonic() + 60
    while not (job_dir / "attempt-1" / "server.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_of(job_dir)
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends to the foreground group
    proc.communicate(timeout=30)
    stopped_in = time.monotonic() - sent
    assert proc.returncode == 130
    result = json.loads((job_dir / "attempt-1" / "result.json").read_text())
    assert result["state"] == "STOPPED" and result["reason"] == "stopped by SIGINT"
    assert wait_gone(job_dir, 5) == []
    print(f"\nMEASURED SIGINT -> launcher exit {stopped_in:.1f} s")
    assert stopped_in < 15


def test_sigterm_during_training_stops_everything(tmp_path, smoke_assets_local):
    proc = start(tmp_path, "trainer.use_vllm=false", "grpo.max_steps=10000", "grpo.save_steps=10000")
    job_dir = job_dir_of(tmp_path)
    attempt = job_dir / "attempt-1"
    deadline = time.monotonic() + 400
    while (read_heartbeat(attempt) or {}).get("phase") != "step" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert (read_heartbeat(attempt) or {}).get("phase") == "step"
    sent = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)  # only the launcher: it must take its components down itself
    proc.communicate(timeout=30)
    stopped_in = time.monotonic() - sent
    assert json.loads((attempt / "result.json").read_text())["reason"] == "stopped by SIGTERM"
    assert wait_gone(job_dir, 5) == []
    print(f"\nMEASURED SIGTERM -> launcher exit {stopped_in:.1f} s")
    assert stopped_in < 15


def test_second_launch_never_writes_over_the_first(tmp_path):
    first = create_job_dir(tmp_path, "smoke")
    second = create_job_dir(tmp_path, "smoke")
    assert first != second and first.exists() and second.exists()


def test_local_gpu_split_is_disjoint(tmp_path):
    cfg = compose("+experiment=deepmath", "cluster=local", "trainer.gpus_per_node=2", "server.gpus_per_node=1",
                  f"model.name_or_path={tmp_path}", f"data.name_or_path={tmp_path}")
    plan = build_plan(cfg)
    assert plan.component("trainer").gpus == [0, 1] and plan.component("server").gpus == [2]
    cfg.server.gpus, cfg.trainer.gpus = [0], [1, 2]
    plan = build_plan(cfg)
    assert plan.component("trainer").gpus == [1, 2] and plan.component("server").gpus == [0]
