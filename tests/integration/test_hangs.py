"""Hangs diagnosed on the real test cluster: the stacks of a component's processes on another node, asked
for by a helper step beside the component's (`srun --overlap ... python -m launcher.faulthandlers`;
launcher/faulthandlers.py, launcher/supervisor/hangs.py).

One job: the real vLLM CPU server (component 0) and GRPO on CPU training through it (generation on the
server, the weights synced at every step) whose reward returns at once until the test says otherwise, then
blocks in a C call. First the test asks the healthy server for its stacks (vLLM's processes registered the
handler through the `launcher_stacks` plugin): `scancel --signal` reaches the API server only, the helper
step every process, vLLM's engine core included (found through its parent: its process title wiped the
environment the helper matches); the server keeps serving. Then it makes the reward hang: the watchdog
ends the job, and the reason names hang-trainer.txt, which holds the stuck frame of the trainer on its node.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.health import Health, check
from launcher.jobfolder.records import Cause, read_result, read_server_ready
from launcher.jobfolder.progress import read_heartbeat

from .conftest import launch, no_job_processes, report, wait_file, wait_state

pytestmark = pytest.mark.cluster

REWARDS = """
import os
from pathlib import Path

HANG_NOW = Path(__file__).with_name("hang_now")


def hangs_when_told(completions, **kwargs):
    if HANG_NOW.exists():
        r, w = os.pipe()
        os.read(r, 1)  # stuck in a C call: nobody writes
    return [0.0 for _ in completions]
"""


@pytest.fixture
def name(cluster_env):
    value = f"hg{secrets.token_hex(3)}"
    yield value
    subprocess.run(["scancel", "-n", value], env=cluster_env, capture_output=True)


def step_id(env: dict, job_id: str, step_name: str) -> str:
    out = subprocess.run(["squeue", "-h", "-s", "-o", "%i %j"], capture_output=True, text=True, env=env)
    ids = [line.split()[0] for line in out.stdout.splitlines() if line.split()[1:] == [step_name]
           and line.split()[0].split(".")[0] in (job_id, str(int(job_id) + 1))]
    assert len(ids) == 1, out.stdout
    return ids[0]


def dumped(folder: Path, component: str) -> list[Path]:
    return sorted(p for p in folder.glob(f"{component}-*.txt") if p.stat().st_size > 0)


def test_stacks_of_steps_on_other_nodes_and_a_hung_trainer_diagnosed(cluster_env, smoke_assets, tmp_path, name):
    (tmp_path / "hang_rewards.py").write_text(REWARDS)
    job = launch(cluster_env, tmp_path, f"name={name}", "grpo.max_steps=10000",
                 "grpo.save_steps=10000", "reward.funcs=[hang_rewards.hangs_when_told]", "reward.timeout_s=null",
                 "trainer.watchdog_timeout_s=20", f"+cluster.env.PYTHONPATH={tmp_path}")
    wait_file(job.job_dir / "attempt-1" / "server_ready.json", 600)
    url = read_server_ready(job.attempt).url
    stacks = job.attempt / "stacks"

    # the healthy server asked for its stacks. scancel --signal reaches only the step's task (vLLM's API
    # server): one process answers. The supervisor's way, a helper step beside the server's on its node,
    # signals every process of the component there; the server keeps serving
    scancel = subprocess.run(["scancel", "--signal=URG", step_id(cluster_env, job.job_id, f"{name}-server")],
                             env=cluster_env, capture_output=True, text=True)
    assert scancel.returncode == 0, scancel.stderr
    wait_file(stacks, 30, lambda p: len(dumped(p, "server")) >= 1)
    time.sleep(2)  # the other processes would have answered by now, were they signalled
    assert len(dumped(stacks, "server")) == 1
    assert "vllm/v1/engine/core.py" not in dumped(stacks, "server")[0].read_text()  # the API server's
    helper = subprocess.run(["srun", f"--jobid={job.job_id}", "--het-group=0", "--nodes=1", "--ntasks-per-node=1",
                             "--overlap", sys.executable, "-m", "launcher.faulthandlers", str(job.attempt), "server"],
                            env=cluster_env, capture_output=True, text=True, timeout=60)
    assert helper.returncode == 0 and re.search(r"node1: SIGURG to [2-9] process\(es\)", helper.stdout), helper
    answered = {p.name: p.read_text() for p in dumped(stacks, "server")}
    text = "\n".join(answered.values())
    assert "most recent call first" in text and "vllm/entrypoints" in text, text[:3000]
    # the engine core's own file (by scancel's way above it stayed empty: one file answered then)
    assert any("vllm/v1/engine/core.py" in t and "vllm/entrypoints" not in t for t in answered.values()), \
        {n: t[:1500] for n, t in answered.items()}
    assert check(url) is Health.OK and read_result(job.attempt) is None

    # the trainer stuck in its reward: the watchdog, then the supervisor's capture on the trainer's node
    (tmp_path / "hang_now").write_text("")
    wait_file(job.attempt, 300, lambda a: (read_heartbeat(a) and read_heartbeat(a).get("stage") == "reward"
                                           and (tmp_path / "hang_now").stat().st_mtime < read_heartbeat(a).time))
    hung = time.time()
    wait_file(job.attempt / "result.json", 120)
    assert wait_state(job.job_id, 120) == "FAILED"
    ended = time.time() - hung
    result = read_result(job.attempt)
    hang_file = job.attempt / "hang-trainer.txt"
    assert result.cause is Cause.HANG
    assert re.match(r"trainer made no progress for more than trainer.watchdog_timeout_s=20 s; stalled in reward "
                    r"function 'hangs_when_told' at step \d+ \(phase 'step'\); Python stacks of 1 process\(es\) and "
                    f"log tails in {re.escape(str(hang_file))}$", result.summary), result.summary
    report_text = hang_file.read_text()
    assert re.search(r'hang_rewards\.py", line \d+ in hangs_when_told', report_text), report_text
    log = job.supervisor_log()
    assert re.search(r"asked with: srun --het-group=1 .*--overlap .*: node2: SIGURG to 1 process\(es\)", log), log
    decided = float(re.search(r"\+\s*([\d.]+)s trainer made no progress", log).group(1))
    captured = float(re.search(r"\+\s*([\d.]+)s trainer hung: Python stacks", log).group(1))
    assert captured - decided < 5, log
    left = no_job_processes(job, 60)
    report("trainer stuck in a reward (C call), watchdog 20 s", "FAILED", ended, left)
    print(f"MEASURED watchdog decision -> trainer stacks captured across nodes in {captured - decided:.1f} s")
    assert left == []
