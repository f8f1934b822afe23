"""Sweeps through the real CLI (`python -m launcher -m ...`) against fake Slurm clients on PATH.

The fakes record every call, so these tests check what the sweep sends to the scheduler (one sbatch
per valid point, spaced by the rate limit, retried on transient errors) and what it writes (the
manifest), without a cluster. tests/integration/test_sweep.py does the same on the real test cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import OmegaConf

from conftest import fake_executable
from launcher.sweep.journal import JOURNAL, parse_points
from launcher.sweep.manifest import MANIFEST, Manifest, point_key, retire_job, upsert
from launcher.sweep.points import PointConfigs, expand
from launcher.sweep.resume import reconcile_submitting, resume_mode

REPO = Path(__file__).resolve().parents[1]

FAKES = {
    # sbatch: optional injected failures ($FAKE/fail_left x $FAKE/fail_message), optional slowness
    "sbatch": r'''
echo "$(date +%s.%N) $*" >> "$FAKE/sbatch.calls"
left=$(cat "$FAKE/fail_left" 2>/dev/null || echo 0)
if [ "$left" -gt 0 ]; then
  echo $((left - 1)) > "$FAKE/fail_left"
  echo "sbatch: error: Batch job submission failed: $(cat "$FAKE/fail_message")" >&2
  exit 1
fi
if [ -f "$FAKE/sbatch_sleep" ]; then touch "$FAKE/sbatch_started"; sleep "$(cat "$FAKE/sbatch_sleep")"; fi
n=$(cat "$FAKE/next_id" 2>/dev/null || echo 1000)
echo $((n + 2)) > "$FAKE/next_id"
echo "Submitted batch job $n"
''',
    # sacct: het rows for every id of -j; states from $FAKE/state_<id> ("S" or "S0 S1"), default PENDING
    "sacct": r'''
echo "$*" >> "$FAKE/sacct.calls"
while [ $# -gt 0 ]; do [ "$1" = -j ] && ids=$2; shift; done
echo "JobID|JobName|State|ExitCode|NodeList|Elapsed|Start|End"
for j in ${ids//,/ }; do
  read -r s0 s1 < <(cat "$FAKE/state_$j" 2>/dev/null || echo PENDING)
  echo "$j+0|smoke|$s0|0:0|node1|||"; echo "$j+1|smoke|${s1:-$s0}|0:0|node2|||"
done
''',
    "squeue": 'echo "$*" >> "$FAKE/squeue.calls"; cat "$FAKE/squeue.out" 2>/dev/null; exit 0\n',
    "scancel": 'echo "$*" >> "$FAKE/scancel.calls"\n',
    "sinfo": 'echo "$*" >> "$FAKE/sinfo.calls"; exit 1\n',  # no facts: validation skips the partition checks
    "git": 'echo "$*" >> "$FAKE/git.calls"; exit 1\n',  # "not a git repository" (counted: once per sweep)
    "scontrol": "exit 1\n",
}


def write_fake(bin_dir: Path, name: str, body: str) -> None:
    fake_executable(bin_dir, name, body)


class FakeSlurm:
    def __init__(self, root: Path):
        self.root = root
        self.dir = root / "fake"
        self.bin = self.dir / "bin"
        self.bin.mkdir(parents=True)
        for name, body in FAKES.items():
            write_fake(self.bin, name, body)
        self.env = dict(os.environ, PATH=f"{self.bin}:{os.environ['PATH']}", FAKE=str(self.dir))
        self.env.pop("SLURM_CONF", None)

    def calls(self, name: str) -> list[str]:
        path = self.dir / f"{name}.calls"
        return path.read_text().splitlines() if path.exists() else []

    def fail_next(self, n: int, message: str) -> None:
        (self.dir / "fail_left").write_text(str(n))
        (self.dir / "fail_message").write_text(message)

    def set_state(self, job_id: str, *states: str) -> None:
        (self.dir / f"state_{job_id}").write_text(" ".join(states) + "\n")

    def launcher(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "launcher", *args], capture_output=True, text=True,
                              env=self.env, cwd=self.root, timeout=300, **kwargs)

    def jobs(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "launcher.jobs", *args], capture_output=True, text=True,
                              env=self.env, cwd=self.root, timeout=300)


@pytest.fixture
def fake(tmp_path) -> FakeSlurm:
    return FakeSlurm(tmp_path)


# deepmath: the server has 1 GPU, so TP x DP must be 1 x 1 unless gpus_per_node follows
TP_DP = ("+experiment=deepmath", "cluster=slurm", "cluster.job_root=jobs",
         "server.tensor_parallel_size=1,2", "server.data_parallel_size=1,2", "server.gpus_per_node=1,2")


def sweep_args(root: Path, *extra: str, name: str = "sweep") -> list[str]:
    return ["-m", *TP_DP, f"hydra.sweep.dir={root / name}", *extra]


def test_sweep_submits_valid_points_reports_invalid_and_ends_with_a_table(fake, tmp_path):
    out = fake.launcher(*sweep_args(tmp_path))
    assert out.returncode == 2, out.stderr  # some points were invalid (as a single invalid launch)
    points = Manifest(tmp_path / "sweep").read()
    assert len(points) == 8
    valid = {(1, 1, 1), (2, 1, 2), (1, 2, 2)}  # (TP, DP, GPUs)
    for p in points:
        values = tuple(int(o.split("=")[1]) for o in p["overrides"][3:6])
        if values in valid:
            assert p["status"] == "submitted" and p["job_id"] and Path(p["job_dir"]).is_dir()
            assert p["submitted_at"] and p["state"] == "PENDING"  # read once at the end (one sacct call)
            assert json.loads((Path(p["job_dir"]) / "sweep_point.json").read_text())["index"] == p["index"]
            # each job got its own point's config (one composed config, each point's values set in turn)
            config = (Path(p["job_dir"]) / "config.yaml").read_text()
            assert f"tensor_parallel_size: {values[0]}\n" in config and f"data_parallel_size: {values[1]}\n" in config
        else:
            assert p["status"] == "rejected" and p["job_id"] is None
            assert "TP x DP" in p["reason"] and p["problems"][0]["keys"][0] == "server.tensor_parallel_size"
    assert len(fake.calls("sbatch")) == 3 and len(fake.calls("sacct")) == 1
    # read once for the whole sweep, not once per point: sinfo (one read, with its one retry), git's snapshot
    assert len(fake.calls("sinfo")) == 2 and len(fake.calls("git")) == 1
    assert all((Path(p["job_dir"]) / "git.txt").read_text().startswith("not a git repository")
               for p in points if p["job_dir"])
    # the end of the output: the table (point -> job id or reason -> job folder), plain text when piped
    tail = out.stdout[out.stdout.index("5 invalid point(s)"):]
    assert "\x1b[" not in out.stdout
    lines = tail.splitlines()
    assert lines[-9].startswith("#  point") and len(lines[-8:]) == 8
    assert lines[-8].startswith("0  server.tensor_parallel_size=1 server.data_parallel_size=1 server.gpus_per_node=1  1000")
    assert "rejected: TP x DP = 1 x 1 = 1 must equal the server's GPUs" in lines[-7]
    assert "#1 server.tensor_parallel_size=1 server.data_parallel_size=1 server.gpus_per_node=2 -> " \
           "server.tensor_parallel_size, server.data_parallel_size, server.nodes, server.gpus_per_node: TP x DP" in tail


def test_sbatch_calls_are_spaced_by_the_rate_limit(fake, tmp_path):
    out = fake.launcher("-m", "+experiment=deepmath", "cluster=slurm", "cluster.job_root=jobs",
                        "cluster.submit_rate_per_s=4", "grpo.learning_rate=1e-6,2e-6,3e-6,4e-6",
                        f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert out.returncode == 0, out.stderr
    times = [float(line.split()[0]) for line in fake.calls("sbatch")]
    assert len(times) == 4
    gaps = [b - a for a, b in zip(times, times[1:])]
    # the fake stamps its own start, which a busy machine delays by up to ~0.1 s; unthrottled, gaps are ms
    assert min(gaps) >= 0.15 and times[-1] - times[0] >= 3 * 0.25 - 0.05, gaps


def test_the_end_of_a_sweep_asks_squeue_first(fake, tmp_path):
    # squeue lists every job of -j (the jobs just went in): sacct, which lags slurmctld, is not needed
    write_fake(fake.bin, "squeue", 'echo "$*" >> "$FAKE/squeue.calls"\n'
                                   'while [ $# -gt 0 ]; do [ "$1" = -j ] && ids=$2; shift; done\n'
                                   'for j in ${ids//,/ }; do echo "$j+0|PENDING"; echo "$j+1|RUNNING"; done\n')
    out = fake.launcher("-m", "+experiment=deepmath", "cluster=slurm", "cluster.job_root=jobs",
                        "grpo.learning_rate=1e-6,2e-6", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert out.returncode == 0, out.stderr
    assert fake.calls("sacct") == [] and len(fake.calls("squeue")) == 1
    assert [p["state"] for p in Manifest(tmp_path / "sweep").read()] == ["RUNNING", "RUNNING"]


def test_facts_are_read_once_per_cluster_setting(fake, tmp_path):
    out = fake.launcher("-m", "+experiment=deepmath", "cluster=slurm", "cluster.job_root=jobs", "cluster.partition=a,b",
                        "grpo.learning_rate=1e-6,2e-6", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert out.returncode == 0, out.stderr
    assert len(fake.calls("sbatch")) == 4
    assert len(fake.calls("sinfo")) == 2 * 2  # one read per partition (each with its one retry), not per point


def test_transient_errors_are_retried_with_backoff(fake, tmp_path):
    fake.fail_next(2, "Socket timed out on send/recv operation")
    out = fake.launcher("-m", "+experiment=deepmath", "cluster=slurm", "cluster.job_root=jobs",
                        "grpo.learning_rate=1e-6,2e-6", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("sbatch failed transiently") == 2 and "retrying in 1 s" in out.stderr \
        and "retrying in 2 s" in out.stderr
    assert len(fake.calls("sbatch")) == 4
    assert [p["status"] for p in Manifest(tmp_path / "sweep").read()] == ["submitted", "submitted"]


def test_permanent_error_stops_the_sweep_and_resume_submits_only_the_rest(fake, tmp_path):
    (fake.dir / "fail_left").write_text("0")
    out = fake.launcher("-m", "+experiment=deepmath", "cluster=slurm", "cluster.job_root=jobs",
                        "grpo.learning_rate=1e-6,2e-6,3e-6,4e-6", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert out.returncode == 0
    # a second sweep into the same folder is refused without resume
    again = fake.launcher("-m", "+experiment=deepmath", "cluster=slurm", "cluster.job_root=jobs",
                          "grpo.learning_rate=1e-6,2e-6,3e-6,4e-6", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert again.returncode == 2 and "already holds a sweep" in again.stderr

    fake.fail_next(1, "Invalid partition name specified")
    args = ["-m", "+experiment=deepmath", "cluster=slurm", "cluster.job_root=jobs", "grpo.learning_rate=1e-6,2e-6,3e-6",
            "grpo.max_steps=5,6", f"hydra.sweep.dir={tmp_path / 'b'}"]
    first = fake.launcher(*args)
    assert first.returncode == 1
    assert "sbatch failed (permanent)" in first.stderr and "Invalid partition name specified" in first.stdout
    assert "sweep stopped: sbatch failed for point #0" in first.stderr
    assert "Resume with: python -m launcher.jobs resume" in first.stderr
    points = Manifest(tmp_path / "b").read()
    assert [p["status"] for p in points] == ["submit_failed"] + ["pending"] * 5
    assert "Invalid partition name specified" in points[0]["reason"]
    calls_before = len(fake.calls("sbatch"))

    resumed = fake.jobs("resume", str(tmp_path / "b"))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    points = Manifest(tmp_path / "b").read()
    assert [p["status"] for p in points] == ["submitted"] * 6
    assert len(fake.calls("sbatch")) == calls_before + 6
    # resuming a complete sweep submits nothing
    again = fake.jobs("resume", str(tmp_path / "b"))
    assert again.returncode == 0 and len(fake.calls("sbatch")) == calls_before + 6
    assert again.stderr.count("not submitted again") == 6
    runs = json.loads((tmp_path / "b" / "sweep.json").read_text())["runs"]
    assert [r["mode"] for r in runs] == ["no", "missing", "missing"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_during_a_submission_lets_it_finish_and_be_recorded(fake, tmp_path, sig):
    (fake.dir / "sbatch_sleep").write_text("2")
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "-m", "+experiment=deepmath",
                             "cluster=slurm", "cluster.job_root=jobs", "grpo.learning_rate=1e-6,2e-6,3e-6",
                             f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                            env=fake.env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    started = fake.dir / "sbatch_started"
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists()
    # while sbatch runs, to the whole process group as a terminal does (Ctrl-C, lost SSH session):
    # sbatch is not killed halfway, its job is recorded, and the sweep stops after it
    os.killpg(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stderr
    points = Manifest(tmp_path / "sweep").read()
    assert [p["status"] for p in points] == ["submitted", "pending", "pending"]
    assert points[0]["job_id"] == "1000" and len(fake.calls("sbatch")) == 1
    assert f"{sig.name}: stopping the sweep after the point being submitted" in stderr
    assert "1 of 3 points went in; 2 still to submit" in stderr
    # the stop folded the journal into manifest.jsonl: the file alone is the accurate record
    assert not (tmp_path / "sweep" / JOURNAL).exists()
    assert parse_points((tmp_path / "sweep" / MANIFEST).read_text()) == points


def test_a_hard_killed_sweep_leaves_its_journal_and_status_and_resume_read_it(fake, tmp_path):
    # SIGKILL to the whole group while the second point's sbatch runs: nothing of the sweep's own can run
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "-m", "+experiment=deepmath", "cluster=slurm",
                             "cluster.job_root=jobs", "cluster.submit_rate_per_s=1", "grpo.learning_rate=1e-6,2e-6,3e-6",
                             f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                            env=fake.env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    manifest = Manifest(tmp_path / "sweep")
    while not any(p["status"] == "submitted" for p in manifest.read()) and time.monotonic() < deadline:
        time.sleep(0.02)
    (fake.dir / "sbatch_sleep").write_text("60")  # the next sbatch (a second away: the rate limit) hangs
    while not (fake.dir / "sbatch_started").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (fake.dir / "sbatch_started").exists()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    sweep_dir = tmp_path / "sweep"
    # manifest.jsonl still says what the start wrote; the journal holds what happened since, and readers see it
    assert [p["status"] for p in parse_points((sweep_dir / MANIFEST).read_text())] == ["pending"] * 3
    points = Manifest(sweep_dir).read()
    assert [p["status"] for p in points] == ["submitted", "submitting", "pending"]
    assert points[0]["job_id"] == "1000" and Path(points[1]["job_dir"]).is_dir()

    (fake.dir / "sbatch_sleep").unlink()
    status = fake.jobs("status", str(sweep_dir))
    assert status.returncode == 0 and "1000" in status.stdout, status.stdout + status.stderr
    resumed = fake.jobs("resume", str(sweep_dir))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # the killed sbatch left no job (no submission.json, squeue lists none): that point goes in again, once
    assert resumed.stderr.count("not submitted again") == 1
    points = Manifest(sweep_dir).read()
    assert [p["status"] for p in points] == ["submitted"] * 3 and points[0]["job_id"] == "1000"
    assert len({p["job_id"] for p in points}) == 3 and len(fake.calls("sbatch")) == 4
    assert not (sweep_dir / JOURNAL).exists()  # the end of the resumed sweep folded it in


def test_dry_run_sweep_records_points_without_submitting(fake, tmp_path):
    out = fake.launcher("-m", "+experiment=deepmath", "cluster=slurm", "dry_run=true", "grpo.learning_rate=1e-6,2e-6",
                        f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert out.returncode == 0, out.stderr
    assert [p["status"] for p in Manifest(tmp_path / "sweep").read()] == ["dry_run", "dry_run"]
    assert fake.calls("sbatch") == [] and not list(tmp_path.glob("sweep/[0-9]*"))  # no numbered Hydra folders


# ----------------------------------------------------------------------------- the manifest itself


def test_manifest_edits_are_atomic_rewrites_and_points_keep_their_history(tmp_path):
    m = Manifest(tmp_path)
    with m.edit() as points:
        p = upsert(points, 0, ["b=1", "a=2"])
        p.update(status="submitted", job_id="7", job_dir="/x")
    with m.edit() as points:
        p = upsert(points, 0, ["a=2", "b=1"])  # the same point, whatever the order
        assert p["job_id"] == "7"
        retire_job(p)
        p.update(status="submitted", job_id="9")
    (point,) = m.read()
    assert point["job_id"] == "9" and point["history"][0]["job_id"] == "7"
    assert point_key(["b=1", "a=2"]) == point_key(["a=2", "b=1"])
    assert not list(tmp_path.glob(".manifest.jsonl.*.tmp"))
    with pytest.raises(RuntimeError):
        with m.edit() as points:
            points.clear()
            raise RuntimeError("nothing is written when the edit fails")
    assert len(m.read()) == 1


def test_a_point_left_submitting_is_reconciled(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("PATH", fake.env["PATH"])
    monkeypatch.setenv("FAKE", str(fake.dir))
    went_in = tmp_path / "a"
    went_in.mkdir()
    (went_in / "submission.json").write_text(json.dumps({"job_id": "41", "submitted_at": "t"}))
    point = {"status": "submitting", "job_dir": str(went_in)}
    reconcile_submitting(point)
    assert point["status"] == "submitted" and point["job_id"] == "41"

    queued = tmp_path / "b"
    queued.mkdir()
    (fake.dir / "squeue.out").write_text(f"43+0|{queued}/submitit/.submission_file_x.sh\n")
    point = {"status": "submitting", "job_dir": str(queued)}
    reconcile_submitting(point)
    assert point["status"] == "submitted" and point["job_id"] == "43"

    lost = tmp_path / "c"
    lost.mkdir()
    point = {"status": "submitting", "job_dir": str(lost)}
    reconcile_submitting(point)
    assert point["status"] == "pending" and "interrupted" in point["reason"]


def test_resume_modes():
    assert resume_mode(False) == "no" and resume_mode("true") == "missing"
    assert resume_mode("marked") == "marked"
    with pytest.raises(ValueError):
        resume_mode("sometimes")


# ----------------------------------------------------------------------------- each point's config


class CountingLoader:
    """Hydra's config loader, counting the compositions asked of it."""

    def __init__(self, loader):
        self.loader = loader
        self.composed: list[list[str]] = []

    def load_sweep_config(self, master, overrides):
        self.composed.append(list(overrides))
        return self.loader.load_sweep_config(master, overrides)

    def __getattr__(self, name):
        return getattr(self.loader, name)


def point_configs(*overrides: str) -> tuple[PointConfigs, CountingLoader, list[list[str]]]:
    """What the launcher plugin gets: Hydra's multirun config, the loader, every point's overrides."""
    import hydra_plugins.launcher_sweep.plugins  # noqa: F401 - its ConfigStore nodes (conf/config.yaml selects them)

    loader = CountingLoader(GlobalHydra.instance().config_loader())
    master = loader.load_configuration("config", list(overrides), RunMode.MULTIRUN)
    points = expand([str(o) for o in OmegaConf.to_container(master.hydra.overrides.task)], loader)
    return PointConfigs(loader, master, points), loader, points


@pytest.fixture
def hydra_loader():
    with initialize_config_module(config_module="launcher.conf", version_base="1.3"):
        yield


def test_a_sweep_of_values_is_never_composed_again(hydra_loader):
    configs, loader, points = point_configs("+experiment=deepmath", "server.tensor_parallel_size=1,2",
                                            "grpo.learning_rate=1e-6,2e-6", "+grpo.seed=range(0,2)")
    assert len(points) == 8 and loader.composed == []  # the multirun config is every point's base
    for i, overrides in enumerate(points):
        values = dict(o.lstrip("+").split("=", 1) for o in overrides)
        cfg = configs.get(i)
        assert cfg.server.tensor_parallel_size == int(values["server.tensor_parallel_size"])
        assert cfg.grpo.learning_rate == float(values["grpo.learning_rate"]) and cfg.grpo.seed == int(values["grpo.seed"])
        assert cfg.name == "deepmath" and "hydra" not in cfg


def test_a_sweep_over_config_groups_composes_once_per_choice(hydra_loader):
    configs, loader, points = point_configs("+experiment=deepmath", "cluster=slurm,local",
                                            "server.tensor_parallel_size=1,2,4")
    assert len(points) == 6 and [o[-1] for o in loader.composed] == ["cluster=slurm", "cluster=local"]
    seen = [(str(configs.get(i).cluster.backend.value), configs.get(i).server.tensor_parallel_size)
            for i in range(len(points))]
    assert seen == [("slurm", 1), ("slurm", 2), ("slurm", 4), ("local", 1), ("local", 2), ("local", 4)]


def test_a_point_that_cannot_compose_fails_the_sweep_before_anything_is_submitted(hydra_loader):
    with pytest.raises(HydraException, match="tensor_parallel_size"):
        point_configs("+experiment=deepmath", "server.tensor_parallel_size=1,abc")
    with pytest.raises(HydraException, match="no_such_key"):
        point_configs("+experiment=deepmath", "server.no_such_key=1,2")
    with pytest.raises(HydraException, match="already"):  # `+key=` onto a key the config has: Hydra refuses it
        point_configs("+experiment=deepmath", "+grpo.learning_rate=1e-6,2e-6")


def test_hydra_interpolations_get_each_points_own_hydra_config(hydra_loader):
    configs, _, points = point_configs("+experiment=deepmath", "trainer.nodes=1,2", "name=run-${hydra:job.num}")
    assert [configs.get(i).name for i in range(len(points))] == ["run-0", "run-1"]  # composed one by one


def test_sweeps_use_no_hydra_internals():
    """The sweep hooks into Hydra through its plugin API only: no hydra._internal, nothing patched."""
    sources = [*REPO.glob("launcher/**/*.py"), *REPO.glob("hydra_plugins/**/*.py")]
    for path in sources:
        text = path.read_text()
        assert "hydra._internal" not in text and "load_sweep_config =" not in text, path
    config = (REPO / "conf" / "config.yaml").read_text()
    assert "override hydra/launcher: launcher_sweep" in config and "override hydra/sweeper: launcher_sweep" in config
