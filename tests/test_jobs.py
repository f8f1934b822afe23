"""The jobs CLI (status, logs, cancel, resubmit, report) against fake Slurm clients; job folders are filled
by hand with what the supervisor and the trainer write. tests/integration/test_sweep.py runs the same
commands on the real test cluster."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.show.tables import print_table
from launcher.cli.report import summarize_job
from launcher.sweep.manifest import Manifest
from test_sweep import FakeSlurm


@pytest.fixture
def swept(tmp_path) -> tuple[FakeSlurm, Path, list[dict]]:
    """A 4-point sweep (1 invalid) submitted to the fake scheduler: jobs 1000, 1002, 1004."""
    fake = FakeSlurm(tmp_path)
    out = fake.launcher("-m", "+experiment=deepmath", "cluster=slurm", "cluster.job_root=jobs",
                        "cluster.submit_rate_per_s=100", "grpo.num_generations=8,3,4,16",
                        f"hydra.sweep.dir={tmp_path / 'sweep'}",
                        "hydra.callbacks.sweep.resume=false")
    assert out.returncode == 2, out.stderr
    points = Manifest(tmp_path / "sweep").read()
    assert [p["status"] for p in points] == ["submitted", "rejected", "submitted", "submitted"]
    return fake, tmp_path / "sweep", points


def attempt(job_dir: str, n: int = 1, supervisor: str = "", result: dict | None = None,
            metrics: list[dict] = (), logs: dict | None = None) -> Path:
    folder = Path(job_dir) / f"attempt-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "supervisor.log").write_text(supervisor)
    if result is not None:
        (folder / "result.json").write_text(json.dumps(result))
    with open(folder / "metrics.jsonl", "w") as f:
        for row in metrics:
            f.write(json.dumps(row) + "\n")
    for name, text in (logs or {}).items():
        (folder / name).write_text(text)
    return folder


def train_rows(tokens: list[float], rewards: list[float]) -> list[dict]:
    return [{"kind": "train", "step": i + 1, "tokens_per_s": t, "step_time_s": 100 / t, "reward": r}
            for i, (t, r) in enumerate(zip(tokens, rewards))]


def test_status_is_one_sacct_call_with_components_aggregated_and_failure_reasons(swept):
    fake, sweep_dir, points = swept
    a, b, c = (p for p in points if p.get("job_id"))
    fake.set_state(a["job_id"], "RUNNING")
    fake.set_state(b["job_id"], "FAILED", "CANCELLED")  # server failed, trainer cancelled
    fake.set_state(c["job_id"], "COMPLETED")
    attempt(b["job_dir"], supervisor="2026-01-01T00:00:00 +   1.0s attempt 1 of job 1002\n"
            "2026-01-01T00:01:00 +  60.0s job FAILED: server exited with code 1 before becoming healthy; last lines\n")
    attempt(c["job_dir"], result={"state": "COMPLETED", "reason": "trainer finished", "timings": {"server_healthy": 42.0}},
            metrics=train_rows([10, 100, 120, 110], [0.1, 0.2, 0.3, 0.4]))
    calls = len(fake.calls("sacct"))
    out = fake.jobs("status", str(sweep_dir))
    assert out.returncode == 0, out.stderr
    assert len(fake.calls("sacct")) == calls + 1  # ONE sacct call for the whole sweep
    assert "\x1b[" not in out.stdout  # piped: plain text
    lines = out.stdout.splitlines()
    assert lines[0] == f"{sweep_dir}: 1 running, 1 completed, 1 failed, 1 rejected"
    row = {line.split()[0]: line for line in lines[2:]}
    assert "RUNNING" in row["0"] and "queued (RUNNING)" in row["0"]
    assert "FAILED (server FAILED, trainer CANCELLED)" in row["2"]
    assert "FAILED: server exited with code 1 before becoming healthy" in row["2"]
    assert "COMPLETED" in row["3"] and "110.0 tokens/s, reward 0.250, server up in 42 s" in row["3"]
    assert "rejected" in row["1"] and "must be divisible by num_generations (3)" in row["1"]
    # "status when last read" lands in the manifest
    states = {p["index"]: p["state"] for p in Manifest(sweep_dir).read()}
    assert states == {0: "RUNNING", 1: None, 2: "FAILED", 3: "COMPLETED"}
    as_json = [json.loads(line) for line in fake.jobs("status", str(sweep_dir), "--json").stdout.splitlines()]
    assert [r["category"] for r in as_json] == ["running", "rejected", "failed", "completed"]


def test_status_of_one_job_by_folder_or_id(swept):
    fake, sweep_dir, points = swept
    job = points[2]
    by_dir = fake.jobs("status", job["job_dir"])
    by_id = subprocess.run([sys.executable, "-m", "launcher.jobs", "status", job["job_id"], "--root",
                            str(sweep_dir.parent / "jobs")], capture_output=True, text=True, env=fake.env,
                           cwd=sweep_dir.parent)
    for out in (by_dir, by_id):
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[0] == f"{sweep_dir}: 1 pending"
        assert f"2  grpo.num_generations=4  {job['job_id']}  PENDING" in out.stdout
    missing = fake.jobs("status", "/nonexistent")
    assert missing.returncode == 2 and "not a sweep folder, a job folder or a job id" in missing.stderr


def test_logs_prints_the_chosen_component_and_follows_until_the_job_ends(swept):
    fake, sweep_dir, points = swept
    job = points[0]
    attempt(job["job_dir"], logs={"trainer.log": "t1\nt2\nt3\n", "server.log": "s1\n"})
    need_point = fake.jobs("logs", str(sweep_dir))
    assert need_point.returncode == 2 and "add --point N (#0, #1, #2, #3)" in need_point.stderr
    out = fake.jobs("logs", str(sweep_dir), "--point", "0", "-n", "2")
    assert out.stdout == "t2\nt3\n"
    assert fake.jobs("logs", job["job_dir"], "-c", "server").stdout == "s1\n"

    fake.set_state(job["job_id"], "RUNNING")
    proc = subprocess.Popen([sys.executable, "-m", "launcher.jobs", "logs", job["job_id"], "-f", "-n", "1",
                             "--root", str(sweep_dir.parent / "jobs")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=fake.env)
    # each step waits for the follower to print what the previous one wrote (pytest-timeout bounds a hang)
    assert proc.stdout.readline() == "t3\n"
    with open(Path(job["job_dir"]) / "attempt-1" / "trainer.log", "a") as f:
        f.write("t4\n")
    assert proc.stdout.readline() == "t4\n"
    attempt(job["job_dir"], n=2, logs={"trainer.log": "again1\n"})  # a requeue: the follow switches over
    assert proc.stdout.readline().startswith("==> ") and proc.stdout.readline() == "again1\n"
    with open(Path(job["job_dir"]) / "attempt-2" / "trainer.log", "a") as f:
        f.write("again2\n")
    assert proc.stdout.readline() == "again2\n"
    fake.set_state(job["job_id"], "COMPLETED")
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert stdout == "", stdout  # nothing more, and the follower ended with the job


def test_cancel_sends_one_scancel_for_the_live_jobs_only(swept):
    fake, sweep_dir, points = swept
    ids = [p["job_id"] for p in points if p.get("job_id")]
    fake.set_state(ids[2], "COMPLETED")
    out = fake.jobs("cancel", str(sweep_dir))
    assert out.returncode == 0, out.stderr
    assert fake.calls("scancel") == [f"{ids[0]} {ids[1]}"]
    assert f"cancelled 2 job(s): {ids[0]} {ids[1]}" in out.stdout
    fake.jobs("cancel", str(sweep_dir), "--point", "0")
    assert fake.calls("scancel")[-1] == ids[0]


def test_resubmit_failed_and_cancelled_points_with_their_overrides(swept):
    fake, sweep_dir, points = swept
    ids = [p["job_id"] for p in points if p.get("job_id")]
    fake.set_state(ids[0], "CANCELLED")
    fake.set_state(ids[1], "FAILED")
    fake.set_state(ids[2], "RUNNING")
    sbatch_before = len(fake.calls("sbatch"))
    out = fake.jobs("resubmit", str(sweep_dir))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "resubmitting point(s) #0, #2 with their overrides" in out.stdout
    assert len(fake.calls("sbatch")) == sbatch_before + 2
    after = {p["index"]: p for p in Manifest(sweep_dir).read()}
    for index, old in ((0, ids[0]), (2, ids[1])):
        assert after[index]["status"] == "submitted" and after[index]["job_id"] not in ids
        assert after[index]["history"][-1]["job_id"] == old and not after[index]["resubmit"]
        assert after[index]["overrides"] == points[index]["overrides"]
    assert after[3]["job_id"] == ids[2] and after[3]["history"] == []  # running: left alone
    assert after[1]["status"] == "rejected"
    refused = fake.jobs("resubmit", str(sweep_dir), "--point", "3")
    assert refused.returncode == 2 and "still have a live job: cancel it first" in refused.stderr


def test_report_writes_csv_and_png_and_names_the_best_point(swept):
    pytest.importorskip("matplotlib")
    fake, sweep_dir, points = swept
    ids = [p["job_id"] for p in points if p.get("job_id")]
    for job_id in ids:
        fake.set_state(job_id, "COMPLETED")
    attempt(points[0]["job_dir"], result={"state": "COMPLETED", "reason": "ok", "timings": {"server_healthy": 30.5}},
            metrics=train_rows([5, 100, 100], [0.1, 0.2, 0.3]))
    attempt(points[2]["job_dir"], result={"state": "COMPLETED", "reason": "ok", "timings": {"server_healthy": 50.0}},
            metrics=train_rows([5, 300, 200], [0.1, 0.1, 0.1]))
    attempt(points[3]["job_dir"], result={"state": "COMPLETED", "reason": "ok", "timings": {"server_healthy": 45.0}},
            metrics=[{"kind": "preflight", "step": 0, "tokens_per_s": 80.0, "reward": 0.5}])
    out = fake.jobs("report", str(sweep_dir))
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(open(sweep_dir / "report.csv")))
    assert [r["index"] for r in rows] == ["0", "1", "2", "3"]
    assert rows[0]["grpo.num_generations"] == "8" and rows[3]["grpo.num_generations"] == "16"
    assert float(rows[0]["tokens_per_s"]) == 100 and float(rows[2]["tokens_per_s"]) == 250  # warm-up row left out
    assert float(rows[0]["reward"]) == pytest.approx(0.2) and rows[3]["metrics_from"] == "preflight"
    assert rows[1]["state"] == "REJECTED" and rows[1]["tokens_per_s"] == ""
    assert float(rows[2]["server_startup_s"]) == 50.0
    png = (sweep_dir / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "best point by tokens_per_s: #2 num_generations=4: 250 tokens/s" in out.stdout
    by_reward = fake.jobs("report", str(sweep_dir), "--by", "reward")
    assert "best point by reward: #3 num_generations=16: 80 tokens/s, reward 0.5" in by_reward.stdout


def test_summarize_job_reads_every_attempt(tmp_path):
    attempt(str(tmp_path), 1, result={"state": "REQUEUED", "reason": "x", "timings": {"server_healthy": 12.0}},
            metrics=train_rows([5, 50], [0.0, 0.1]))
    attempt(str(tmp_path), 2, result={"state": "COMPLETED", "reason": "ok", "timings": {"server_healthy": 20.0}},
            metrics=train_rows([60, 70], [0.2, 0.3]))
    row = summarize_job(tmp_path)
    assert row["server_startup_s"] == 12.0 and row["result"] == "COMPLETED"
    assert row["tokens_per_s"] == 60 and row["steps"] == 2 and row["metrics_from"] == "train"


def test_print_table_plain_when_piped_and_rich_on_a_terminal(monkeypatch):
    plain = io.StringIO()
    print_table(["#", "point"], [["0", "a=1"], ["10", "a=22\nwrapped"]], title="t", stream=plain)
    assert plain.getvalue() == "t\n#   point\n0   a=1\n10  a=22 wrapped\n"

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TERM", raising=False)
    fancy = Tty()
    print_table(["#", "point"], [["0", "a=1"]], stream=fancy)
    assert "┃" in fancy.getvalue() or "│" in fancy.getvalue()


class _AppendsOnFirstLine(io.StringIO):
    """stdout that appends a line to the followed log as soon as the first line is printed: the user's job
    writing right after the follower has shown its tail."""

    def __init__(self, log: Path):
        super().__init__()
        self.log = log

    def write(self, text: str) -> int:
        if not self.getvalue():
            with open(self.log, "a") as f:
                f.write("t4\n")
        return super().write(text)


def test_a_line_appended_while_the_tail_prints_is_followed_once(tmp_path, monkeypatch):
    from launcher.cli import logs

    log = tmp_path / "attempt-1" / "trainer.log"
    log.parent.mkdir()
    log.write_text("t1\nt2\nt3\n")
    out = _AppendsOnFirstLine(log)
    monkeypatch.setattr(sys, "stdout", out)
    # the job ends once t4 is out (or after a few polls, so a lost line fails the test instead of hanging it)
    polls = []
    monkeypatch.setattr(logs, "query_states", lambda ids: polls.append(1) or {
        ids[0]: {"State": "COMPLETED" if "t4" in out.getvalue() or len(polls) > 20 else "RUNNING"}})
    assert logs.follow_log(tmp_path, "7", "trainer", None, 1, poll_s=0.01, state_every_s=0) == 0
    assert out.getvalue() == "t3\nt4\n"  # t4 after the tail, once (the size taken after the tail lost it)
