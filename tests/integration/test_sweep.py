"""Sweeps on the real test cluster: submission, manifest, interruption and resume, the jobs CLI, the report.

Scheduler-light: the 6-point sweeps submit held jobs (`+cluster.sbatch.hold=true`: they stay PENDING
and start no server) and are cancelled at the end; only the report test runs real jobs: 4 smoke jobs, the
real server at TP 1, 2 x DP 1, 2, each training 4 steps with the weights synced to every worker at every
step (the layouts test_parallel_server's counter-tests are about). Every test submits under its own job name and cancels that name when it ends.
Transient and permanent sbatch failures are injected by an `sbatch` wrapper earlier on PATH.
"""

from __future__ import annotations

import csv
import json
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from launcher.jobfolder.progress import read_metrics
from launcher.slurm.states import query_states
from launcher.sweep.manifest import Manifest

from conftest import fake_executable

from .conftest import orphans
from .test_parallel_server import LOGP_BOUND, check_binding, logp_differences

pytestmark = pytest.mark.cluster

SIX_POINTS = ("trainer.preflight_prompts=1,2", "grpo.num_generations=2,3,4")  # num_generations=3: invalid (#1, #4)

WRAPPER = r'''#!/bin/bash
# fails the first $FAIL_FIRST calls (counted in $FAIL_COUNTER) with $FAIL_MESSAGE, then is the real sbatch
n=$(cat "$FAIL_COUNTER" 2>/dev/null || echo 0)
if [ "$n" -lt "${FAIL_FIRST:-0}" ]; then
  echo $((n + 1)) > "$FAIL_COUNTER"
  echo "sbatch: error: Batch job submission failed: $FAIL_MESSAGE" >&2
  exit 1
fi
exec /usr/bin/sbatch "$@"
'''


@pytest.fixture
def name(cluster_env):
    """A job name of this test's own; every job of that name is cancelled at the end."""
    value = f"sw{secrets.token_hex(3)}"
    yield value
    subprocess.run(["scancel", "-n", value], env=cluster_env, capture_output=True)


def run(env: dict, *argv: str, timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)


def sweep(env, root: Path, name: str, *overrides: str) -> subprocess.CompletedProcess:
    return run(env, "-m", "launcher", "-m", "+experiment=smoke", "cluster=slurm", f"cluster.job_root={root}",
               f"name={name}", *overrides, f"hydra.sweep.dir={root / 'sweep'}")


def jobs(env, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run(env, "-m", "launcher.jobs", *argv, timeout=timeout)


def queued_ids(env, name: str) -> set[str]:
    """What slurmctld really holds under this name (het components folded)."""
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True, env=env)
    return {line.split("+")[0].strip() for line in out.stdout.splitlines() if line.strip()}


def my_orphans(root: Path) -> list[str]:
    """Processes left in the nodes by this test's jobs (their environment names a job folder under root);
    other engineers' jobs run on the same nodes at the same time."""
    mine = []
    for line in orphans():
        try:
            environ = Path(f"/proc/{line.split()[0]}/environ").read_bytes()
        except (OSError, IndexError):
            continue
        if f"LAUNCHER_JOB_DIR={root}".encode() in environ:
            mine.append(line)
    return mine


def poll(what, predicate, timeout_s: float, every_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    value = what()
    while not predicate(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached after {timeout_s} s: {value!r}")
        time.sleep(every_s)
        value = what()
    return value


def wrapper_env(env: dict, tmp_path: Path, fail_first: int, message: str) -> dict:
    bin_dir = tmp_path / "wrapper"
    bin_dir.mkdir(exist_ok=True)
    fake_executable(bin_dir, "sbatch", WRAPPER)
    counter = tmp_path / f"counter-{secrets.token_hex(2)}"
    return dict(env, PATH=f"{bin_dir}:{env['PATH']}", FAIL_FIRST=str(fail_first), FAIL_COUNTER=str(counter),
                FAIL_MESSAGE=message)


def test_six_point_sweep_two_invalid_then_status_cancel_resubmit(cluster_env, smoke_assets, tmp_path, name):
    started = time.monotonic()
    out = sweep(cluster_env, tmp_path, name, "+cluster.sbatch.hold=true", *SIX_POINTS)
    elapsed = time.monotonic() - started
    assert out.returncode == 2, out.stdout + out.stderr  # 2: some points were invalid; the others went in
    print(f"\nMEASURED 6-point sweep (4 sbatch, 2 rejected) returned in {elapsed:.1f} s")
    points = Manifest(tmp_path / "sweep").read()
    assert [p["status"] for p in points] == ["submitted", "rejected", "submitted", "submitted", "rejected", "submitted"]
    ids = [p["job_id"] for p in points if p["job_id"]]
    assert set(ids) == queued_ids(cluster_env, name) and len(set(ids)) == 4
    # the output ends with the table: point, job id or rejection reason, job folder
    table = out.stdout.splitlines()[-7:]
    assert table[0].split() == ["#", "point", "job", "job", "folder"]
    assert table[2].startswith("1  trainer.preflight_prompts=1 grpo.num_generations=3  rejected: the generation batch")
    assert table[1].split()[3] == ids[0] and table[1].split()[4] == points[0]["job_dir"]
    assert "#1 trainer.preflight_prompts=1 grpo.num_generations=3 -> grpo.num_generations" in out.stdout

    # status: one table across the sweep (sacct lags: poll)
    status = poll(lambda: jobs(cluster_env, "status", str(tmp_path / "sweep")),
                  lambda o: o.stdout.startswith(f"{tmp_path / 'sweep'}: 4 pending, 2 rejected"), 60)
    assert "\x1b[" not in status.stdout and "PENDING" in status.stdout

    # cancel one job by its id, then resubmit it with its overrides
    cancelled = jobs(cluster_env, "cancel", ids[0])
    assert cancelled.returncode == 0 and f"cancelled 1 job(s): {ids[0]}" in cancelled.stdout
    poll(lambda: query_states([ids[0]]).get(ids[0], {}).get("State"), lambda s: s == "CANCELLED", 60)
    status = poll(lambda: jobs(cluster_env, "status", str(tmp_path / "sweep")),
                  lambda o: "3 pending, 1 cancelled, 2 rejected" in o.stdout, 60)
    resubmitted = jobs(cluster_env, "resubmit", str(tmp_path / "sweep"))
    assert resubmitted.returncode == 0, resubmitted.stdout + resubmitted.stderr
    assert "resubmitting point(s) #0 with their overrides" in resubmitted.stdout
    point0 = Manifest(tmp_path / "sweep").read()[0]
    assert point0["job_id"] not in ids and point0["history"][0]["job_id"] == ids[0]
    assert point0["overrides"] == points[0]["overrides"]
    assert queued_ids(cluster_env, name) == {point0["job_id"], *ids[1:]}

    # cancel the whole sweep: one scancel for every live job
    everything = jobs(cluster_env, "cancel", str(tmp_path / "sweep"))
    assert everything.returncode == 0 and "cancelled 4 job(s)" in everything.stdout
    poll(lambda: jobs(cluster_env, "status", str(tmp_path / "sweep")).stdout,
         lambda s: "4 cancelled, 2 rejected" in s, 60)
    assert queued_ids(cluster_env, name) == set()


def test_interrupted_sweep_leaves_an_accurate_manifest_and_resume_submits_the_rest(cluster_env, smoke_assets,
                                                                                  tmp_path, name):
    # transient slurmctld errors on the first 2 sbatch calls (retried), then Ctrl-C after 2 points
    env = wrapper_env(cluster_env, tmp_path, 2, "Socket timed out on send/recv operation")
    argv = [sys.executable, "-m", "launcher", "-m", "+experiment=smoke", "cluster=slurm", f"cluster.job_root={tmp_path}",
            f"name={name}", "+cluster.sbatch.hold=true", "cluster.submit_rate_per_s=1", *SIX_POINTS,
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    manifest = Manifest(tmp_path / "sweep")
    poll(lambda: sum(p["status"] == "submitted" for p in manifest.read()), lambda n: n >= 2, 120, 0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert stderr.count("sbatch failed transiently") == 2 and "Socket timed out" in stderr
    assert "SIGINT: stopping the sweep after the point being submitted" in stderr
    points = manifest.read()
    went_in = {p["job_id"] for p in points if p["status"] == "submitted"}
    # accurate: exactly what slurmctld holds, nothing queued without a record, nothing recorded not queued
    assert went_in == queued_ids(cluster_env, name) and len(went_in) >= 2
    assert all(p["status"] in ("submitted", "rejected", "pending") for p in points)
    assert any(p["status"] == "pending" for p in points)
    assert "Resume with: python -m launcher.jobs resume" in stderr

    resumed = jobs(cluster_env, "resume", str(tmp_path / "sweep"))
    assert resumed.returncode == 2, resumed.stdout + resumed.stderr  # the 2 invalid points are reported again
    points = manifest.read()
    assert [p["status"] for p in points] == ["submitted", "rejected", "submitted", "submitted", "rejected", "submitted"]
    ids = {p["job_id"] for p in points if p["job_id"]}
    assert went_in < ids and ids == queued_ids(cluster_env, name) and len(ids) == 4  # nothing twice
    assert all(p["history"] == [] for p in points)
    assert resumed.stderr.count("not submitted again") == len(went_in)

    # a permanent sbatch error stops a sweep at once and says so
    bad = wrapper_env(cluster_env, tmp_path, 100, "Invalid partition name specified")
    out = run(bad, "-m", "launcher", "-m", "+experiment=smoke", "cluster=slurm", f"cluster.job_root={tmp_path}",
              f"name={name}", "+cluster.sbatch.hold=true", "trainer.preflight_prompts=1,2",
              f"hydra.sweep.dir={tmp_path / 'bad'}")
    assert out.returncode == 1
    assert "sbatch failed (permanent)" in out.stderr and "Invalid partition name specified" in out.stderr
    assert [p["status"] for p in Manifest(tmp_path / "bad").read()] == ["submit_failed", "pending"]
    assert int(Path(bad["FAIL_COUNTER"]).read_text()) == 1  # not retried
    jobs(cluster_env, "cancel", str(tmp_path / "sweep"))


def test_report_status_and_logs_on_jobs_that_ran(cluster_env, smoke_assets, tmp_path, name):
    # the real server at TP 1, 2 x DP 1, 2 (on these GPU-less nodes vLLM runs on CPU, its workers bound by the
    # wrapper; each worker counts as one "GPU" of the server, 1 CPU and 3 GB each, as test_parallel_server sizes it)
    out = sweep(cluster_env, tmp_path, name, "server.tensor_parallel_size=1,2", "server.data_parallel_size=1,2",
                "device=cpu", "server.cpus_per_gpu=1", "server.mem_per_gpu=3000M", "grpo.max_steps=4")
    assert out.returncode == 0, out.stdout + out.stderr
    points = Manifest(tmp_path / "sweep").read()
    ids = [p["job_id"] for p in points]
    # follow the first job's supervisor log while it runs: it ends by itself when the job ends
    follow = subprocess.Popen([sys.executable, "-m", "launcher.jobs", "logs", str(tmp_path / "sweep"), "--point", "0",
                               "-c", "supervisor", "-f"], env=cluster_env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    done = poll(lambda: {j: query_states(ids).get(j, {}).get("State") for j in ids},
                lambda s: all(v in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL") for v in s.values()),
                1200, 5)
    assert set(done.values()) == {"COMPLETED"}, done
    followed, _ = follow.communicate(timeout=120)
    assert follow.returncode == 0
    assert "server healthy after" in followed and "job COMPLETED" in followed

    status = poll(lambda: jobs(cluster_env, "status", str(tmp_path / "sweep")),
                  lambda o: "4 completed" in o.stdout.splitlines()[0], 60)
    assert re.search(r"COMPLETED .* [\d.]+ tokens/s, reward [\d.]+, server up in \d+ s", status.stdout), status.stdout
    logs = jobs(cluster_env, "logs", ids[1], "-c", "trainer", "-n", "0", "--root", str(tmp_path))
    # the smoke job ends with its preflight, or trains through the server where weight sync runs on CPU
    assert logs.returncode == 0 and ("preflight passed" in logs.stdout or "training finished" in logs.stdout)
    server_log = jobs(cluster_env, "logs", points[1]["job_dir"], "-c", "server", "-n", "5")
    assert server_log.returncode == 0 and server_log.stdout.strip()

    report = jobs(cluster_env, "report", str(tmp_path / "sweep"))
    assert report.returncode == 0, report.stdout + report.stderr
    rows = list(csv.DictReader(open(tmp_path / "sweep" / "report.csv")))
    assert len(rows) == 4
    layouts = [(tp, dp) for tp in (1, 2) for dp in (1, 2)]  # Hydra's order: the last key varies fastest
    for index, (row, (tp, dp)) in enumerate(zip(rows, layouts)):
        assert row["state"] == "COMPLETED" and row["metrics_from"] in ("preflight", "train")
        assert float(row["tokens_per_s"]) > 0 and float(row["server_startup_s"]) > 0
        assert row["point"] == f"TP={tp} DP={dp}" and row["server.tensor_parallel_size"] == str(tp)  # per point
        assert row["server.data_parallel_size"] == str(dp)
        attempt = next(Path(points[index]["job_dir"]).glob("attempt-*"))
        binding = json.loads(next(attempt.glob("node-server-*.json")).read_text())["cpu_binding"]
        assert binding["workers"] == tp * dp and binding["set_by"] == ("vllm" if tp * dp == 1 else "launcher")
        if tp * dp > 1:  # the wrapper bound one CPU list per worker, [DP, PP, TP] order, and said so
            check_binding(SimpleNamespace(attempt=attempt), tp, dp)
        # every step synced the weights to every worker of every engine (the trainer's gloo group has TP x DP
        # + 1 members and /update_weights returns once each has its buckets): the generations follow
        train = [r for r in read_metrics(attempt) if r.get("kind") == "train"]
        assert [r["step"] for r in train] == [1, 2, 3, 4] and all((r.get("weight_sync_s") or 0) > 0 for r in train)
        assert max(logp_differences(train)) < LOGP_BOUND, (tp, dp, logp_differences(train))
        if (attempt / "preflight.json").exists():
            assert json.loads((attempt / "preflight.json").read_text())["server_world_size"] == tp * dp
    assert re.search(r"best point by tokens_per_s: #[0-3] TP=[12] DP=[12]: [\d.]+ tokens/s", report.stdout), report.stdout
    assert all(re.search(rf"^\s*{i}\s+TP={tp} DP={dp}\b.*COMPLETED", report.stdout, re.M)
               for i, (tp, dp) in enumerate(layouts)), report.stdout
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # the PNG needs the 'report' extra; the CSV and the best point do not
        assert "matplotlib is not installed" in report.stderr
    else:
        assert (tmp_path / "sweep" / "report.png").read_bytes().startswith(b"\x89PNG")
    print("\nMEASURED report rows: " + "; ".join(f"#{r['index']} {r['tokens_per_s']} tokens/s, server up "
                                                 f"{r['server_startup_s']} s" for r in rows))
    poll(lambda: my_orphans(tmp_path), lambda left: left == [], 60)
