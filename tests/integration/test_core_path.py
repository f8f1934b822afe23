"""The core path on the real cluster: one het job, the real vLLM CPU server, the trainer training through it
(weights synced across the nodes over gloo), the supervisor; the overlapped start (both steps at once, the address handed over) and a trainer failing while the server starts.

Latencies measured here are printed (pytest -s) and written to the closing notes; the asserts use
the issue's bounds (15 s after a server crash, 5 s after the trainer ends), not tight timings.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time

import pytest

from launcher.jobfolder.progress import read_heartbeat

from .conftest import STEPS, launch, orphans, wait_file, wait_no_orphans, wait_state

pytestmark = pytest.mark.cluster


def _stamp(line: str) -> float:
    return dt.datetime.fromisoformat(line.split()[0]).timestamp()


def test_smoke_job_completes_across_nodes(cluster_env, smoke_assets, tmp_path):
    job = launch(cluster_env, tmp_path)
    assert wait_state(job.job_id, 600) == "COMPLETED"
    log = job.supervisor_log()
    # the overlapped start: both steps start at once, the address is handed over once /health is 200
    events = ("server started: srun --het-group=0", "trainer started: srun --het-group=1", "server address published",
              "server healthy after", "address handed to the trainer (server_ready.json)",
              "trainer ended first with exit code 0", "server stopped (trainer ended)", "job COMPLETED")
    positions = [log.find(event) for event in events]
    assert -1 not in positions and positions == sorted(positions), log
    assert "trainer prepared, waiting for the server" in log or "server ready at" in (job.attempt / "trainer.log").read_text()
    server = json.loads((job.attempt / "server.json").read_text())
    trainer_log = (job.attempt / "trainer.log").read_text()
    assert server["host"] == "node1" and server["address"] == "10.213.0.11"  # component 0 on node A
    # on CPU the trainer trains through the server, its weights synced over gloo (launcher.sync), said once
    assert trainer_log.count("generating through the server, weights synced to it over gloo") == 1
    versions = json.loads((job.attempt / "versions.json").read_text())
    assert versions["host"] == "node2" and versions["trl"].startswith("1.16")  # component 1 on node B reached node A
    rows = [json.loads(line) for line in (job.attempt / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("kind") == "train"]
    assert len(rows) == STEPS and all(r["weight_sync_s"] > 0 and r["tokens_per_s"] > 0 for r in rows)
    # node B's weights reached node A's server at every step: its samples follow the trainer
    difference = [r["trl"]["sampling/sampling_logp_difference/mean"] for r in rows]
    assert max(difference) < 0.02, difference
    # the trainer's end -> the job's end: within 5 s (issue bound); printed for the notes
    lines = log.splitlines()
    ended = _stamp(next(l for l in lines if "trainer ended first" in l))
    finished = _stamp(next(l for l in lines if "job COMPLETED" in l))
    timings = job.result()["timings"]
    print(f"\nMEASURED trainer end -> job end {finished - ended:.1f} s; server healthy {timings['server_healthy']:.1f} s, "
          f"trainer prepared {timings.get('trainer_ready', float('nan')):.1f} s after the attempt began")
    assert finished - ended <= 5
    assert wait_no_orphans() == []


def test_server_crash_fails_job_and_stops_trainer(cluster_env, smoke_assets, tmp_path):
    # a long-running trainer training through the server (generation there, the weights synced every step)
    job = launch(cluster_env, tmp_path, "grpo.max_steps=10000", "grpo.save_steps=10000")
    wait_file(job.job_dir, 600, lambda p: (job.attempt / "trainer.log").exists()
              if list(p.glob("attempt-*")) else False)
    wait_file(job.attempt, 600, lambda a: (read_heartbeat(a) or {}).get("phase") == "step")
    wait_file(job.attempt / "server_ready.json", 600)  # a crash during training, not during the server's start
    server = json.loads((job.attempt / "server.json").read_text())
    killed = time.time()
    os.kill(server["pid"], signal.SIGKILL)  # the vLLM API server (the wrapper exec'd into it)
    wait_file(job.attempt / "result.json", 60)
    decided = time.time() - killed
    assert wait_state(job.job_id, 60) == "FAILED"
    result = job.result()
    ended = time.time() - killed
    print(f"\nMEASURED server crash -> supervisor decision {decided:.1f} s, -> sacct FAILED {ended:.1f} s "
          f"({result['cause']})")
    assert decided <= 15
    # whichever notices first: the supervisor (the server step ended; it stops the trainer) or the trainer,
    # whose next request to the dead server fails (the supervisor then stops what is left)
    if result["cause"] == "server_failed":
        assert result["reason"].startswith(("server exited with code", "server process died")), result
        assert "trainer stopped (server died)" in job.supervisor_log()
    else:
        assert result["cause"] == "trainer_failed" and result["reason"].startswith("trainer exited with code"), result
    assert result["state"] == "FAILED"
    assert wait_no_orphans() == []  # trainer processes gone on their node


def test_a_trainer_failing_while_the_server_starts_ends_the_job_at_once(cluster_env, smoke_assets, tmp_path):
    """Fail fast across nodes: the trainer step starts with the server step and fails while preparing (a reward
    module that the login node finds but that does not import on the nodes); the job ends with that reason
    and the server step is stopped. The server is frozen (SIGSTOP) once it has published its address, so
    it cannot become healthy: only the trainer's failure can end the job."""
    (tmp_path / "my_rewards.py").write_text("import no_such_dependency\n\n\ndef reward(completions, **kw):\n"
                                            "    return [0.0] * len(completions)\n")
    job = launch(cluster_env, tmp_path, "reward.funcs=[my_rewards.reward]", f"+cluster.env.PYTHONPATH={tmp_path}")
    wait_file(job.job_dir, 300, lambda p: bool(list(p.glob("attempt-*/server.json"))))
    server = json.loads((job.attempt / "server.json").read_text())
    os.kill(server["pid"], signal.SIGSTOP)
    assert wait_state(job.job_id, 300) == "FAILED"
    result = job.result()
    first = result["reason"].splitlines()[0]
    assert first.startswith("trainer exited with code 1 while the server was starting: ModuleNotFoundError: "
                            "No module named 'no_such_dependency'"), first
    assert result["cause"] == "trainer_failed" and "server_healthy" not in result["timings"]
    log = job.supervisor_log()
    assert "trainer started: srun --het-group=1" in log and "server stopped (trainer ended)" in log
    assert not (job.attempt / "server_ready.json").exists()
    lines = log.splitlines()
    ended = _stamp(next(line for line in lines if "trainer ended first" in line))
    finished = _stamp(next(line for line in lines if "job FAILED" in line))
    print(f"\nMEASURED trainer failed {result['timings']['trainer_ended']:.1f} s after the attempt began; "
          f"job ended {finished - ended:.0f} s later (the frozen server: SIGKILL after cluster.stop_grace_s)")
    assert wait_no_orphans() == []


def test_server_never_healthy_fails_after_startup_timeout(cluster_env, smoke_assets, tmp_path):
    job = launch(cluster_env, tmp_path, "server.startup_timeout_s=8")
    assert wait_state(job.job_id, 120) == "FAILED"
    reason = job.result()["reason"]
    assert reason.startswith("server not healthy after server.startup_timeout_s=8 s")
    # the hang capture's note (launcher/supervisor/hangs.py) comes between the log's path and its tail
    assert f"(full log: {job.attempt / 'server.log'})" in reason and "\nlast lines of server.log:\n" in reason
    assert "hang-server.txt" in reason and (job.attempt / "hang-server.txt").is_file()
    assert "vllm" in reason.lower()  # the tail of the real server's log is in the error
    # the trainer started with the server (the overlapped start) and is stopped with it
    assert "trainer stopped (server not healthy in time)" in job.supervisor_log()
    assert not (job.attempt / "server_ready.json").exists()
    assert wait_no_orphans() == []


def test_two_jobs_on_the_same_nodes_pick_distinct_ports(cluster_env, smoke_assets, tmp_path):
    pin = ("+server.sbatch.nodelist=node3", "+trainer.sbatch.nodelist=node2")
    first = launch(cluster_env, tmp_path / "a", *pin)
    second = launch(cluster_env, tmp_path / "b", *pin)
    assert wait_state(first.job_id, 900) == "COMPLETED"
    assert wait_state(second.job_id, 900) == "COMPLETED"
    a = json.loads((first.attempt / "server.json").read_text())
    b = json.loads((second.attempt / "server.json").read_text())
    assert a["host"] == b["host"] == "node3"
    assert a["port"] != b["port"]
    assert wait_no_orphans() == []
