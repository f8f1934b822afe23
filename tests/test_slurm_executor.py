"""The submitit executor, against fake sbatch/sacct on PATH (recorded outputs); the real cluster runs in
tests/integration."""

import os
from pathlib import Path

import pytest
from submitit.core.utils import UncompletedJobError

from conftest import compose
from launcher.plan.build import build_plan
from launcher.backends.slurm import HetSlurmExecutor, SubmissionError, submit
from conftest import fake_executable
from launcher.supervisor.entry import SlurmEntry


def fake(bin_dir: Path, name: str, body: str) -> None:
    fake_executable(bin_dir, name, body)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    fake(bin_dir, "sbatch", f'cp "$1" {tmp_path}/submitted-$(date +%s%N).sh; echo sbatch >> {calls}\n'
                            f'n=$(wc -l < {calls}); echo "Submitted batch job $((100 + n))"\n')
    fake(bin_dir, "sacct", 'while [ $# -gt 0 ]; do [ "$1" = -j ] && ids=$2; shift; done\n'
                           'echo "JobID|State|NodeList"; for j in $(echo "$ids" | tr , " "); do '
                           'echo "$j+0|FAILED|node1"; echo "$j+1|CANCELLED by 0|node2"; done\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return tmp_path, calls


def plan_and_cfg(tmp_path):
    cfg = compose("+experiment=deepmath", "cluster=slurm", f"cluster.job_root={tmp_path}/jobs")
    return build_plan(cfg), cfg


def test_submits_our_het_script_not_submitits(fake_slurm):
    tmp_path, calls = fake_slurm
    plan, cfg = plan_and_cfg(tmp_path)
    job, job_dir = submit(plan, cfg)
    assert job.job_id == "101"
    script = next(tmp_path.glob("submitted-*.sh")).read_text()
    assert script == (job_dir / "job.sbatch").read_text()
    assert "#SBATCH hetjob" in script and "submitit.core._submit" in script
    assert "#SBATCH --signal=B:USR2@300" in script and "--signal=USR2" not in script.replace("B:USR2", "")
    assert (job_dir / "submitit" / "101_submitted.pkl").exists()


def test_several_submissions_are_several_sbatch_calls_never_an_array(fake_slurm):
    tmp_path, calls = fake_slurm
    plan, cfg = plan_and_cfg(tmp_path)
    executor = HetSlurmExecutor(plan, tmp_path / "jobs")
    (tmp_path / "jobs").mkdir()
    with executor.batch():
        for _ in range(3):
            executor.submit(SlurmEntry())
    assert calls.read_text().count("sbatch") == 3
    for script in tmp_path.glob("submitted-*.sh"):
        assert "--array" not in script.read_text() and "#SBATCH hetjob" in script.read_text()


def test_waiting_on_a_job_that_died_without_result_ends(fake_slurm):
    tmp_path, _ = fake_slurm
    plan, cfg = plan_and_cfg(tmp_path)
    job, _ = submit(plan, cfg)
    assert job.watcher.get_state(job.job_id, mode="force") == "FAILED"
    with pytest.raises(UncompletedJobError):
        job.result()  # submitit's own wait: returns (raises) instead of hanging


def test_transient_sbatch_errors_are_retried(fake_slurm, monkeypatch):
    tmp_path, calls = fake_slurm
    bin_dir = tmp_path / "bin"
    counter = tmp_path / "failures"
    fake(bin_dir, "sbatch", f'echo x >> {counter}; if [ $(wc -l < {counter}) -le 2 ]; then '
                            'echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv '
                            'operation" >&2; exit 1; fi; echo "Submitted batch job 7"\n')
    monkeypatch.setattr("launcher.backends.slurm._retry_delays", lambda retries: [0.0] * retries)
    plan, cfg = plan_and_cfg(tmp_path)
    job, _ = submit(plan, cfg)
    assert job.job_id == "7" and counter.read_text().count("x") == 3


def test_permanent_sbatch_error_is_reported_at_once(fake_slurm):
    tmp_path, _ = fake_slurm
    fake(tmp_path / "bin", "sbatch", 'echo "sbatch: error: Batch job submission failed: Invalid partition name '
                                     'specified" >&2; exit 1\n')
    plan, cfg = plan_and_cfg(tmp_path)
    with pytest.raises(SubmissionError, match="permanent.*Invalid partition name specified"):
        submit(plan, cfg)


def test_the_script_is_rendered_once_per_submission(fake_slurm, monkeypatch):
    import launcher.backends.slurm as slurm

    tmp_path, _ = fake_slurm
    renders = []
    real = slurm.render_sbatch
    monkeypatch.setattr(slurm, "render_sbatch", lambda *a, **k: renders.append(1) or real(*a, **k))
    plan, cfg = plan_and_cfg(tmp_path)
    job, job_dir = submit(plan, cfg)
    assert len(renders) == 1
    assert next(tmp_path.glob("submitted-*.sh")).read_text() == (job_dir / "job.sbatch").read_text()


def test_each_job_polls_through_its_own_watcher(fake_slurm):
    from launcher.backends.slurm import HetSlurmJob

    tmp_path, _ = fake_slurm
    plan, cfg = plan_and_cfg(tmp_path)
    first, _ = submit(plan, cfg)  # the foreground wait's 2 s
    second, _ = submit(plan, cfg, poll_s=7)
    # submitit keeps the delay as the watcher's _delay_s; a job's own watcher carries its own
    assert (first.watcher._delay_s, second.watcher._delay_s, HetSlurmJob.watcher._delay_s) == (2, 7, 30)
    assert first.watcher is not second.watcher and first.job_id in first.watcher._registered


@pytest.mark.parametrize("overrides", [
    ("+experiment=deepmath", "cluster=slurm"),
    ("+experiment=smoke", "cluster=slurm", "name='yes'", "cluster.partition='1e5'", "+grpo.seed=3",
     "model.revision='0012'", "cluster.account='on'"),
])
def test_config_yaml_is_what_omegaconf_writes(overrides):
    """config.yaml is written without building an OmegaConf tree of the typed config first; the text is the same."""
    from omegaconf import OmegaConf

    from launcher.jobfolder.config_record import config_yaml

    cfg = compose(*overrides)
    assert config_yaml(cfg) == OmegaConf.to_yaml(cfg)
    assert OmegaConf.to_container(OmegaConf.create(config_yaml(cfg))) == OmegaConf.to_container(OmegaConf.create(
        OmegaConf.to_yaml(cfg)))
