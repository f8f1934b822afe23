"""A hung trainer on the local backend, end to end (heavy: run under `flock /work/heavy.lock`): the real
supervisor, trainer step and GRPO on CPU (generation inside the trainer, no server: mode=colocate with
trainer.use_vllm=false) with a reward function stuck in a C call on its first batch, as math-verify on one
answer. Without reward.timeout_s the watchdog ends it and the supervisor's capture (SIGURG to the
trainer's process group) holds the stuck frame; with it, the trainer ends itself naming the reward. The
counter-test: a healthy run captures nothing and leaves no stack file. Fast decisions: tests/test_hangs.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

from conftest import PYTHON
from launcher.train.errors import EXIT_REWARD_STALLED

REWARDS = """
import os

def never_returns(completions, **kwargs):
    r, w = os.pipe()
    os.read(r, 1)  # stuck in a C call: nobody writes


def quick(completions, **kwargs):
    return [float(len(c) % 2) for c in completions]
"""


def run_job(tmp_path: Path, reward: str, *overrides: str) -> tuple[subprocess.CompletedProcess, Path, dict]:
    (tmp_path / "hang_rewards.py").write_text(REWARDS)
    argv = [PYTHON, "-m", "launcher", "+experiment=smoke", "cluster=local", f"cluster.job_root={tmp_path}/jobs",
            "mode=colocate", "trainer.use_vllm=false", f"reward.funcs=[hang_rewards.{reward}]",
            f"+cluster.env.PYTHONPATH={tmp_path}", *overrides]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=540)
    match = re.search(r"job folder (\S+)", out.stdout + out.stderr)
    assert match, out.stdout + out.stderr
    attempt = Path(match.group(1)) / "attempt-1"
    return out, attempt, json.loads((attempt / "result.json").read_text())


def processes_of(attempt: Path) -> list[str]:
    needle = f"LAUNCHER_JOB_DIR={attempt.parent}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and needle in (proc / "environ").read_bytes().split(b"\0"):
                found.append(proc.name)
        except OSError:
            continue
    return found


def test_a_trainer_stuck_in_a_reward_is_ended_by_the_watchdog_with_its_stacks(tmp_path):
    t0 = time.monotonic()
    out, attempt, result = run_job(tmp_path, "never_returns", "reward.timeout_s=null", "trainer.watchdog_timeout_s=15")
    took = time.monotonic() - t0
    assert out.returncode == 1 and (result["state"], result["cause"]) == ("FAILED", "hang"), out.stdout
    report = attempt / "hang-trainer.txt"
    assert result["reason"] == ("trainer made no progress for more than trainer.watchdog_timeout_s=15 s; stalled in "
                                "reward function 'never_returns' at step 1 (phase 'step'); Python stacks of 1 "
                                f"process(es) and log tails in {report}")
    text = report.read_text()
    # the stuck frame, inside TRL's reward call, in the process that trains
    assert re.search(r'File ".*hang_rewards\.py", line \d+ in never_returns\n.*in guarded\n.*grpo_trainer\.py.*'
                     r'in _calculate_rewards', text), text
    stacks = list((attempt / "stacks").iterdir())
    assert len(stacks) == 1 and "in never_returns" in stacks[0].read_text()
    assert "last 40 lines of trainer.log" in text
    log = (attempt / "supervisor.log").read_text()
    decided = float(re.search(r"\+\s*([\d.]+)s trainer made no progress", log).group(1))
    captured = float(re.search(r"\+\s*([\d.]+)s trainer hung: Python stacks", log).group(1))
    assert captured - decided < 3, log  # the capture is seconds, the hang still ends promptly
    assert processes_of(attempt) == []
    print(f"\nMEASURED watchdog decision -> stacks captured {captured - decided:.1f} s; whole job {took:.0f} s")


def test_a_reward_past_reward_timeout_s_ends_the_job_naming_that_reward(tmp_path):
    out, attempt, result = run_job(tmp_path, "never_returns", "reward.timeout_s=3", "trainer.watchdog_timeout_s=600")
    assert (result["state"], result["cause"], result["trainer_rc"]) == ("FAILED", "hang", EXIT_REWARD_STALLED), \
        out.stdout
    first = result["reason"].splitlines()[0]
    assert re.match(r"reward function 'never_returns' stalled: no result within reward\.timeout_s=3 s at step 1, "
                    r"stuck at hang_rewards\.py:\d+ in never_returns; Python stacks in (\S+/stacks/trainer-\S+\.txt)",
                    first), first
    stacks = Path(re.search(r"Python stacks in (\S+\.txt)", first).group(1))
    assert "in never_returns" in stacks.read_text()
    assert not (attempt / "hang-trainer.txt").exists()  # the trainer said where it was stuck; not a watchdog hang
    heartbeat = json.loads((attempt / "heartbeat.json").read_text())
    assert (heartbeat["phase"], heartbeat["stalled_reward"]) == ("failed", "never_returns")
    assert "first_step" in result["timings"] and result["timings"]["trainer_ended"] < 120
    assert processes_of(attempt) == []


def test_a_healthy_run_writes_no_stacks(tmp_path):
    """The counter-test: the same job with a reward that returns trains to the end; nothing is captured, the
    stack file every process opened is removed, and the reason claims none."""
    out, attempt, result = run_job(tmp_path, "quick", "grpo.max_steps=2", "grpo.save_steps=100")
    assert out.returncode == 0 and (result["state"], result["reason"]) == ("COMPLETED", "trainer finished"), out.stdout
    assert not (attempt / "stacks").exists() and not list(attempt.glob("hang-*.txt"))
    assert "stacks" not in (attempt / "supervisor.log").read_text()
    assert os.path.getsize(attempt / "metrics.jsonl") > 0
