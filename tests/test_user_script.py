"""Your own training script (trainer.script) and code frozen at submission (docs/bring-your-own.md).

The decisions in process: a script path that does not exist or is not Python is rejected naming
trainer.script; the frozen-code finder (ast, transitive, only files under the launch directory); the job
imports the frozen copies first (and, counter-check, the edited originals without that); the plan text; the
fill rule (the script's own values win). One real run on the local backend (heavy: flock /work/heavy.lock):
TRL's vLLM-guide script, unmodified but for the hub ids, trains through the real vLLM CPU server, while the
original file is overwritten with one that raises right after submission."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PYTHON, compose
from launcher.components.trainer_step import CPU_FLAGS, entry_index
from launcher.jobfolder.frozen_code import activate, find_user_code, freeze
from launcher.plan.build import build_plan
from launcher.plan.plan import Plan
from launcher.plan.user_code import frozen_name, user_script_of
from launcher.train.user_script import FILLED, URL_FIELD, fill_unset, given_names
from launcher.validate.rules import validate

GUIDE_SCRIPT = '''from datasets import load_dataset
from trl import GRPOTrainer, GRPOConfig
from trl.rewards import accuracy_reward
dataset = load_dataset("{data}", split="train")
trainer = GRPOTrainer(model="{model}", args=GRPOConfig(use_vllm=True), reward_funcs=accuracy_reward, train_dataset=dataset)
trainer.train()
'''


def script_problems(tmp_path, monkeypatch, script, *more):
    monkeypatch.chdir(tmp_path)
    cfg = compose("+experiment=smoke", "cluster=local", f"cluster.job_root={tmp_path}/jobs", f"trainer.script={script}",
                  *more)
    return [p for p in validate(cfg) if p.severity == "error" and any(k.startswith("trainer.script") for k in p.keys)]


def test_a_missing_or_non_python_script_is_rejected_naming_the_key(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("train the model, then:\n  - report\n")
    (tmp_path / "train.py").write_text("print('ok')\n")
    missing = script_problems(tmp_path, monkeypatch, "nope.py")
    assert len(missing) == 1 and "nope.py does not exist" in str(missing[0]) and "trainer.script" in str(missing[0])
    not_python = script_problems(tmp_path, monkeypatch, "notes.txt")
    assert len(not_python) == 1 and "notes.txt is not Python: line 1" in str(not_python[0])
    assert script_problems(tmp_path, monkeypatch, str(tmp_path)) and "is not a file" in str(
        script_problems(tmp_path, monkeypatch, str(tmp_path))[0])
    assert script_problems(tmp_path, monkeypatch, "train.py") == []  # counter-check: a Python file passes
    monkeypatch.chdir(tmp_path)
    cfg = compose("+experiment=smoke", "cluster=local", "trainer.script_args=[--x]")
    assert [p.keys for p in validate(cfg) if p.severity == "error"] == [("trainer.script_args",)]


def test_a_script_brings_its_own_data_unless_the_preflight_needs_the_jobs(tmp_path, monkeypatch):
    """The guide's script loads its dataset itself: data.name_or_path is not asked for, and the plan builds;
    the preflight (launcher.train --preflight generates from the job's data) and the launcher's own trainer
    still need it (the counter-checks)."""
    (tmp_path / "train.py").write_text("print('ok')\n")
    monkeypatch.chdir(tmp_path)

    def data_errors(*overrides):
        cfg = compose("+experiment=smoke", "cluster=local", f"cluster.job_root={tmp_path}/jobs", "data.name_or_path=null",
                      *overrides)
        return [str(p) for p in validate(cfg) if p.severity == "error" and "data.name_or_path" in p.keys], cfg

    errors, cfg = data_errors("trainer.script=train.py")
    assert errors == []
    plan = build_plan(cfg)
    assert "your script train.py" in str(plan) and "data:    none given (your script loads its own)" in str(plan)
    assert plan.data.sources() == [] and Plan.from_json(plan.to_json()).data.name_or_path is None
    errors, _ = data_errors("trainer.script=train.py", "trainer.preflight=true")
    assert len(errors) == 1 and "the preflight (trainer.preflight=true) generates from it" in errors[0], errors
    errors, _ = data_errors()
    assert len(errors) == 1 and "is required" in errors[0], errors


def test_the_real_cli_rejects_a_bad_script_before_anything_is_queued(tmp_path):
    out = subprocess.run([PYTHON, "-m", "launcher", "+experiment=smoke", "cluster=local",
                          f"cluster.job_root={tmp_path}/jobs", "trainer.script=missing.py"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0 and "trainer.script" in out.stderr and "missing.py does not exist" in out.stderr
    assert not (tmp_path / "jobs").exists()


def make_tree(root: Path) -> None:
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "train.py").write_text("import helpers\nfrom pkg.sub import thing\nimport os, torch\n"
                                   "from launcher.train import report\n")
    (root / "helpers.py").write_text("import json\nfrom pkg import other2\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "sub" / "__init__.py").write_text("")
    (root / "pkg" / "sub" / "thing.py").write_text("from ..other2 import z\n")
    (root / "pkg" / "other2.py").write_text("z = 1\n")
    (root / "unrelated.py").write_text("x = 1\n")
    (root / "my_rewards.py").write_text("import helpers\ndef score(completions, **kw):\n    return [0.0] * len(completions)\n")


def test_the_finder_follows_imports_under_the_launch_directory_only(tmp_path):
    make_tree(tmp_path)
    found = {p.relative_to(tmp_path).as_posix() for p in find_user_code(str(tmp_path), str(tmp_path / "train.py"))}
    assert found == {"train.py", "helpers.py", "pkg/__init__.py", "pkg/sub/__init__.py", "pkg/sub/thing.py",
                     "pkg/other2.py"}  # transitive and relative; not unrelated.py, os, torch, the launcher
    rewards = {p.relative_to(tmp_path).as_posix()
               for p in find_user_code(str(tmp_path), None, ["my_rewards", "trl.rewards", "launcher.train.smoke_reward"])}
    assert rewards == {"my_rewards.py", "helpers.py", "pkg/__init__.py", "pkg/other2.py"}
    assert frozen_name(str(tmp_path / "pkg" / "sub" / "thing.py"), str(tmp_path)) == "pkg/sub/thing.py"
    assert frozen_name("/elsewhere/train.py", str(tmp_path)) == "_outside/train.py"


def test_the_job_imports_the_frozen_copy_not_the_edited_original(tmp_path):
    launch, job = tmp_path / "launch", tmp_path / "job"
    launch.mkdir(), job.mkdir()
    make_tree(launch)
    (launch / "pkg" / "other2.py").write_text("z = 'as submitted'\n")
    copied = freeze(job, str(launch), None, ["my_rewards.score"])
    assert (job / "code" / "pkg" / "other2.py").is_file() and len(copied) == 4
    (launch / "pkg" / "other2.py").write_text("z = 'edited after submission'\n")
    probe = ("import sys\nfrom launcher.jobfolder.frozen_code import activate\n"
             "if sys.argv[1] == 'frozen': activate(__import__('pathlib').Path(sys.argv[2]))\n"
             "import my_rewards, pkg.other2\nprint(pkg.other2.z)\n")
    run = lambda how: subprocess.run([PYTHON, "-c", probe, how, str(job)], cwd=launch, capture_output=True,  # noqa: E731
                                     text=True, env={**os.environ, "PYTHONPATH": str(launch)}).stdout.strip()
    assert run("frozen") == "as submitted"
    assert run("live") == "edited after submission"  # counter-check: without the frozen copy first, the edit runs
    assert activate(tmp_path / "nothing-frozen") is None


def test_the_plan_runs_the_frozen_script_and_says_what_the_launcher_gives(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("print('hi')\n")
    plan = build_plan(compose("+experiment=smoke", "cluster=local", "trainer.script=train.py",
                              "trainer.script_args=[--lr,'1 e-3']"))
    execs = plan.component("trainer").execs
    assert user_script_of(execs) == ["train.py", "--lr", "1 e-3"]
    assert execs[entry_index(execs) + 1] == "launcher.train.user_script"
    text = str(plan)
    assert ("trainer: your script train.py --lr '1 e-3'; server URL, group port, callback and output_dir given by "
            "the launcher unless the script sets them") in text
    assert "frozen at submission" in text
    plain = build_plan(compose("+experiment=smoke", "cluster=local"))
    assert "your script" not in str(plain) and user_script_of(plain.component("trainer").execs) is None
    assert plain.component("trainer").execs[-2:] == ["-m", "launcher.train"]


def test_the_cpu_flags_go_before_the_script_module(tmp_path, monkeypatch):
    from launcher.components import trainer_step

    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("pass\n")
    plan = build_plan(compose("+experiment=smoke", "cluster=local", "trainer.script=train.py",
                              "trainer.script_args=[-m,launcher.train]"))  # args that look like the module
    monkeypatch.setattr(trainer_step, "rendezvous", lambda *a: (0, "127.0.0.1", 29500))
    monkeypatch.setattr(trainer_step, "trl_accelerate_configs", lambda: "/cfg")
    argv = trainer_step.train_argv(plan, "127.0.0.1", None, "cpu")
    at = argv.index("launcher.train.user_script")
    assert argv[at - 1 - len(CPU_FLAGS):at - 1] == list(CPU_FLAGS)
    assert argv[at + 1:] == ["train.py", "-m", "launcher.train"]


@dataclasses.dataclass
class Config:  # GRPOConfig's shape for the fill rule, without importing TRL
    output_dir: str = None
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    vllm_server_base_url: str = None
    vllm_server_host: str = "0.0.0.0"
    max_steps: int = -1


def test_the_scripts_own_values_win_and_the_rest_take_the_jobs():
    values = {"output_dir": "/job/output", "use_vllm": True, "vllm_mode": "server", URL_FIELD: None, "max_steps": 3}
    given = given_names(Config.__init__, ("my-out",), {"max_steps": 50})
    assert given == {"output_dir", "max_steps"}
    assert fill_unset(values, given) == {"use_vllm": True, "vllm_mode": "server", URL_FIELD: None}
    assert URL_FIELD not in fill_unset(values, given_names(Config.__init__, (), {"vllm_server_host": "10.0.0.9"}))
    assert fill_unset(values, set()) == values
    assert FILLED == "_launcher_filled"


GUIDE_TIMEOUT_S = 420


@pytest.mark.vllm_cpu
def test_the_vllm_guide_script_trains_through_the_server_from_its_frozen_copy(tmp_path, smoke_assets_local):
    """TRL's vLLM-guide script, unmodified but for the hub ids: the launcher gives it the server's address
    (weights synced to the server over gloo at every step), its callback (heartbeats, metrics rows) and
    output_dir; grpo.* from the smoke experiment fill the fields it leaves unset (max_steps=3). The original
    file is overwritten with one that raises as soon as the job folder holds the frozen copy: the job
    still completes."""
    script = tmp_path / "train.py"
    text = GUIDE_SCRIPT.format(data=smoke_assets_local / "data", model=smoke_assets_local / "model")
    script.write_text(text)
    proc = subprocess.Popen([PYTHON, "-m", "launcher", "+experiment=smoke", "cluster=local",
                             f"cluster.job_root={tmp_path}/jobs", "server.enforce_eager=true", "trainer.script=train.py",
                             "grpo.max_steps=3", "grpo.save_steps=100"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    frozen = []
    while not frozen and time.monotonic() < deadline and proc.poll() is None:
        frozen = list((tmp_path / "jobs").glob("smoke/*/code/train.py"))
        time.sleep(0.05)
    assert frozen, "no frozen copy of the script in the job folder"
    script.write_text("raise SystemExit('edited after submission: this must not run')\n")
    output, _ = proc.communicate(timeout=GUIDE_TIMEOUT_S)
    assert proc.returncode == 0, output[-4000:]
    job_dir = frozen[0].parent.parent
    assert frozen[0].read_text() == text and "edited after submission" not in output
    attempt = job_dir / "attempt-1"
    assert json.loads((attempt / "result.json").read_text())["state"] == "COMPLETED"
    rows = [json.loads(line) for line in (attempt / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("kind") == "train"]
    assert [r["step"] for r in train] == [1, 2, 3]  # the launcher's callback, and grpo.max_steps filled in
    assert all(r["weight_sync_s"] > 0 for r in train)  # the weights reached the server at every step
    assert json.loads((attempt / "heartbeat.json").read_text())["phase"] == "done"
    server = json.loads((attempt / "server.json").read_text())
    log = (attempt / "trainer.log").read_text()
    assert f"GRPOTrainer: server {server['url']}, group port" in log  # the job's server, handed over
    assert "waiting for the server's address (server_ready.json)" in log  # the overlapped start held
    assert re.search(r"launcher-filled: .*output_dir", log) and "weight sync to the server over gloo" in log
    assert (job_dir / "output" / "checkpoint-3" / "trainer_state.json").is_file()  # output_dir: the job's
    assert "trainer: your script train.py" in (job_dir / "plan.txt").read_text()
    assert "launcher.train.user_script train.py" in (job_dir / "commands.txt").read_text()


def test_train_resumes_from_the_newest_complete_checkpoint_and_a_checkpoint_stop_ends_the_script(tmp_path):
    from types import SimpleNamespace

    from launcher.train.user_script import wrap_train

    out = tmp_path / "out"
    (out / "checkpoint-4").mkdir(parents=True)
    (out / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (out / "checkpoint-6").mkdir()  # incomplete: no trainer_state.json
    calls, beats = [], []
    trainer = SimpleNamespace(args=SimpleNamespace(output_dir=str(out)), state=SimpleNamespace(global_step=5, max_steps=9))
    trainer.train = lambda *a, **kw: calls.append(kw) or "trained"
    job = SimpleNamespace(is_main=True, job_dir=tmp_path, plan=SimpleNamespace(tracking=None))  # no tracking
    callback = SimpleNamespace(checkpoint_step=None, checkpoint_path=None)
    wrap_train(trainer, job, lambda phase, *a, **kw: beats.append((phase.value, kw)), callback)
    assert trainer.train() == "trained" and calls[-1] == {"resume_from_checkpoint": str(out / "checkpoint-4")}
    trainer.train(resume_from_checkpoint=None)  # the script's own choice wins
    assert calls[-1] == {"resume_from_checkpoint": None}
    callback.checkpoint_step, callback.checkpoint_path = 5, str(out / "checkpoint-5")
    with pytest.raises(SystemExit) as stop:
        trainer.train()
    assert stop.value.code == 0 and beats[-1] == ("done", {"reason": "checkpoint", "checkpoint": str(out / "checkpoint-5")})
    trainer.state.global_step = 9  # a checkpoint at the last step: training finished, the script goes on
    assert trainer.train() == "trained"
