"""Checks on the login node of what the job's environment will be, before anything is queued: the reward
functions' modules as the job's interpreter sees them (cluster.python: a real second interpreter, a venv
without the launcher's packages), and a machine where sbatch is on PATH but no Slurm is configured (the
real sinfo's message, recorded on this machine)."""

from __future__ import annotations

import os
import subprocess
import sys
import venv

import pytest

from conftest import compose, fake_executable
from launcher.validate.facts import gather_facts
from launcher.validate.job_python import find_modules, top_level_modules
from launcher.validate.problems import Facts
from launcher.validate.rules import validate

# `sinfo` on this machine without SLURM_CONF (exit 1)
NO_CONFIG_SINFO = """\
sinfo: error: resolve_ctls_from_dns_srv: res_nsearch error: Unknown host
sinfo: error: fetch_config: DNS SRV lookup failed
sinfo: error: _establish_config_source: failed to fetch config
sinfo: fatal: Could not establish a configuration source
"""


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> str:
    """A real interpreter that has none of the launcher's packages (a venv without pip or site-packages)."""
    where = tmp_path_factory.mktemp("bare") / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(where)
    python = where / "bin" / "python"
    assert subprocess.run([str(python), "-c", "import trl"], capture_output=True).returncode != 0
    return str(python)


def test_top_level_modules():
    assert top_level_modules(["trl.rewards.accuracy_reward", "trl.rewards.think_format_reward", "mine.score"]) == \
        ["trl", "mine"]


def test_the_job_interpreter_is_asked_when_it_is_another(bare_python, tmp_path):
    (tmp_path / "my_rewards.py").write_text("def score(completions, **kw):\n    return [0.0] * len(completions)\n")
    assert find_modules(bare_python, ["trl", "json"], None) == {"trl": False, "json": True}
    assert find_modules(bare_python, ["my_rewards"], str(tmp_path)) == {"my_rewards": True}  # via PYTHONPATH
    assert find_modules(sys.executable, ["trl"], os.environ.get("PYTHONPATH")) == {"trl": True}  # in-process
    assert find_modules(str(tmp_path / "no-python"), ["trl"], None) is None  # cannot ask: unknown, no verdict


def test_a_reward_module_the_job_cannot_import_is_refused(bare_python, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose("+experiment=smoke", "cluster=local", f"cluster.python={bare_python}",
                  "reward.funcs=[trl.rewards.accuracy_reward]")
    facts = gather_facts(cfg)
    assert facts.job_python == bare_python and facts.modules == {"trl": False}
    errors = [str(p) for p in validate(cfg, facts) if p.severity == "error"]
    assert errors == [f"reward.funcs: 'trl.rewards.accuracy_reward': no module 'trl' for {bare_python} (the job's "
                      "Python): install it there, set cluster.python to an interpreter that has it, or put the "
                      "folder that holds it on PYTHONPATH (cluster.env.PYTHONPATH)"]
    # a dry-run still prints the plan (a light login-node install has no trl): a warning there
    dry = compose("+experiment=smoke", "cluster=local", f"cluster.python={bare_python}", "dry_run=true",
                  "reward.funcs=[trl.rewards.accuracy_reward]")
    assert [p.severity for p in validate(dry, facts) if p.keys == ("reward.funcs",)] == ["warning"]
    # the same function with the launcher's own interpreter: found, no problem
    assert not [p for p in validate(compose("+experiment=smoke", "cluster=local"),
                                    gather_facts(compose("+experiment=smoke", "cluster=local")))
                if p.keys == ("reward.funcs",)]


def test_a_module_on_the_jobs_pythonpath_is_found(bare_python, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "team_rewards.py").write_text("def score(completions, **kw):\n    return [1.0] * len(completions)\n")
    cfg = compose("+experiment=smoke", "cluster=local", f"cluster.python={bare_python}",
                  "reward.funcs=[team_rewards.score]", f"+cluster.env.PYTHONPATH={lib}")
    facts = gather_facts(cfg)
    assert facts.modules == {"team_rewards": True}
    assert not [p for p in validate(cfg, facts) if p.keys == ("reward.funcs",)]


def test_with_setup_lines_a_missing_module_is_a_warning():
    cfg = compose("+experiment=smoke", "cluster=local", "cluster.setup=['module load team-python']",
                  "reward.funcs=[trl.rewards.accuracy_reward]")
    facts = Facts(job_python="/opt/py/bin/python", modules={"trl": False})
    found = [p for p in validate(cfg, facts) if p.keys == ("reward.funcs",)]
    assert [p.severity for p in found] == ["warning"] and "cluster.setup may change that" in found[0].message


def test_sbatch_on_path_without_a_slurm_configuration(tmp_path):
    """The real CLI: exit 2 in the launcher's words (and how to run locally), not sbatch's "Could not
    establish a configuration source" after a submission attempt."""
    bin_dir = tmp_path / "bin"
    record = tmp_path / "sbatch-calls"
    fake_executable(bin_dir, "sbatch", f"echo \"$*\" >> {record}\necho 'Submitted batch job 1'\n")
    fake_executable(bin_dir, "sinfo", f"cat >&2 <<'EOF'\n{NO_CONFIG_SINFO}EOF\nexit 1\n")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    env.pop("SLURM_CONF", None)
    out = subprocess.run([sys.executable, "-m", "launcher", "+experiment=smoke", f"cluster.job_root={tmp_path}/jobs"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.splitlines()[:2] == [
        "launcher: invalid configuration, nothing was submitted:",
        "  - cluster: sbatch is on PATH, but this machine has no Slurm configuration, so no controller can be "
        "reached (sinfo says: sinfo: fatal: Could not establish a configuration source). On a Slurm login node, "
        "point SLURM_CONF at the cluster's slurm.conf; to run on this machine instead, add cluster=local"]
    assert not record.exists() and not (tmp_path / "jobs").exists()
    dry = subprocess.run([sys.executable, "-m", "launcher", "+experiment=smoke", "dry_run=true"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert dry.returncode == 0 and "#SBATCH hetjob" in dry.stdout  # a dry-run still shows the plan, and warns
    assert "launcher: warning: cluster: sbatch is on PATH, but this machine has no Slurm configuration" in dry.stderr


def test_slurm_conf_that_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "slurm.conf"))
    facts = gather_facts(compose("+experiment=smoke", "cluster=slurm"))
    assert facts.slurm_error == f"SLURM_CONF={tmp_path / 'slurm.conf'} does not exist"
    assert [p.keys for p in validate(compose("+experiment=smoke", "cluster=slurm"), facts)][0] == ("cluster",)


def test_a_controller_that_never_answers_is_said_in_the_launchers_words(tmp_path):
    """sbatch's transient error until the retries run out (cluster.submit_retries=0: at once)."""
    bin_dir = tmp_path / "bin"
    fake_executable(bin_dir, "sbatch", "echo 'sbatch: error: Batch job submission failed: Unable to contact slurm "
                                       "controller (connect failure)' >&2\nexit 1\n")
    fake_executable(bin_dir, "sinfo", "echo 'debug|gpu:2|3|infinite|debug*'\n")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    env.pop("SLURM_CONF", None)
    out = subprocess.run([sys.executable, "-m", "launcher", "+experiment=smoke", "cluster=slurm",
                          "cluster.submit_retries=0", f"cluster.job_root={tmp_path}/jobs"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.splitlines()[-2:] == [
        "launcher: sbatch failed (transient, retries exhausted): sbatch: error: Batch job submission failed: Unable "
        "to contact slurm controller (connect failure)",
        "launcher: no Slurm controller answered this machine (is slurmctld up? `scontrol ping` says); nothing was "
        "queued. To run on this machine instead, add cluster=local"]
