"""Tracking (docs/tracking.md): grpo.report_to's keys and their errors, the plan's TrackingSpec, the run decided
once per job and kept in tracking.json, the env every attempt's trainer gets, the TensorBoard resume marker,
and the counter-cases of the real-cluster test (tests/integration/test_tracking.py): without the kept record a
second attempt gets a second W&B id, and without the marker TensorBoard's axis repeats steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import compose

from launcher.jobfolder import names
from launcher.jobfolder.layout import create_job_dir, write_snapshot
from launcher.jobfolder.tracking import (TrackingRun, decide_run, ensure_run, job_tracking_env, read_run,
                                         tracking_env)
from launcher.plan.build import build_plan
from launcher.plan.plan import Plan, TrackingSpec
from launcher.validate.problems import InvalidConfig
from launcher.validate.tracking import report_to_list
from tracking_files import event_file_steps, offline_runs, one_axis, shown_steps

REPO = Path(__file__).resolve().parents[1]
BOTH = "grpo.report_to=[wandb,tensorboard]"


def plan_of(*overrides: str) -> Plan:
    return build_plan(compose("cluster=local", *overrides))


def problems_of(*overrides: str) -> list[str]:
    with pytest.raises(InvalidConfig) as caught:
        plan_of(*overrides)
    return [str(p) for p in caught.value.problems]


# ----------------------------------------------------------------------------- keys, validation, the plan


@pytest.mark.parametrize("value, expected", [(None, []), ("none", []), ([], []), ("wandb", ["wandb"]),
                                             ("wandb,tensorboard", ["wandb", "tensorboard"]),
                                             (["tensorboard"], ["tensorboard"])])
def test_report_to_is_read_as_trl_reads_it(value, expected):
    assert report_to_list(value) == expected


def test_no_tracking_by_default():
    plan = plan_of()
    assert plan.tracking is None and plan.grpo["report_to"] == "none"


def test_the_plan_carries_the_tracking_keys_and_says_so():
    plan = plan_of(BOTH, "tracking.project=p1", "tracking.entity=team", "tracking.group=g", "tracking.tags=[a,b]")
    assert plan.tracking == TrackingSpec(backends=["wandb", "tensorboard"], project="p1", entity="team", group="g",
                                         tags=["a", "b"], wandb_mode=None)
    assert plan.grpo["report_to"] == ["wandb", "tensorboard"]  # TRL makes its callbacks from it
    assert Plan.from_json(plan.to_json()) == plan
    assert "tracking: W&B (project p1, entity team, group g) under <job>/wandb; TensorBoard in <job>/tensorboard" \
        in str(plan)


def test_offline_nodes_make_wandb_offline_by_themselves_and_the_key_wins():
    assert plan_of("grpo.report_to=wandb", "cluster.offline=true").tracking.wandb_mode == "offline"
    assert plan_of("grpo.report_to=wandb").tracking.wandb_mode is None
    assert plan_of("grpo.report_to=wandb", "cluster.offline=true", "tracking.wandb_mode=disabled") \
        .tracking.wandb_mode == "disabled"


def test_other_integrations_pass_to_trl_without_a_kept_run():
    plan = plan_of("grpo.report_to=mlflow")
    assert plan.tracking is None and plan.grpo["report_to"] == "mlflow"
    assert plan_of("grpo.report_to=all").tracking.backends == ["wandb", "tensorboard"]


@pytest.mark.parametrize("override, key, words", [
    ("grpo.report_to=[wandb,wandbb]", "grpo.report_to", "unknown integration(s) wandbb"),
    ("grpo.report_to=[all,wandb]", "grpo.report_to", "'all' already means"),
    ("tracking.wandb_mode=off", "tracking.wandb_mode", "none of online, offline, disabled"),
    ("tracking.project=a/b", "tracking.project", "W&B names cannot"),
    ("tracking.group=''", "tracking.group", "W&B names cannot be empty"),
    ("tracking.tags=['a,b']", "tracking.tags", "no comma"),
])
def test_bad_tracking_input_names_the_key_before_anything_is_queued(override, key, words):
    found = problems_of(BOTH, override)
    assert any(p.startswith(f"{key}: ") and words in p for p in found), found


def test_a_missing_package_is_an_error_only_where_the_job_runs_this_python(monkeypatch):
    """This Python without wandb (find_spec answers None, as it does where the package is absent): the error
    names the key and the extra to install; with cluster.python or a container the trainer checks its own."""
    from launcher.validate import tracking as rules

    monkeypatch.setattr(rules, "find_spec", lambda name: None if name == "wandb" else object())
    found = problems_of("grpo.report_to=[wandb,tensorboard]")
    assert found == [f"grpo.report_to: grpo.report_to names wandb, which is not installed in {sys.executable} "
                     "(the job's Python): pip install 'launcher[tracking]'"]
    assert plan_of("grpo.report_to=wandb", "cluster.python=/opt/py/bin/python3").tracking.wandb


def test_the_trainer_checks_its_own_python_first(monkeypatch, tmp_path):
    from launcher.train import tracking as trainer_side
    from launcher.train.errors import JobError

    monkeypatch.setattr(trainer_side.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(JobError, match=r"grpo.report_to names wandb, tensorboard, not installed in .*launcher\[tracking\]"):
        trainer_side.check_installed(FakeJob(tmp_path, SPEC))
    trainer_side.check_installed(FakeJob(tmp_path, None))  # nothing to check


# ----------------------------------------------------------------------------- the run, decided once per job

SPEC = TrackingSpec(backends=["wandb", "tensorboard"])


def test_one_job_is_named_after_its_folder_and_the_environment_fills_what_the_config_leaves():
    run = decide_run(SPEC, "grpo", "20261202-060000-ab12", None, {}, "r1")
    assert run == TrackingRun(run_id="r1", project="grpo", name="grpo-20261202-060000-ab12")
    env = {"WANDB_PROJECT": "theirs", "WANDB_ENTITY": "lab", "WANDB_RUN_GROUP": "g0", "WANDB_MODE": "offline"}
    run = decide_run(SPEC, "grpo", "x", None, env, "r1")
    assert (run.project, run.entity, run.group, run.wandb_mode) == ("theirs", "lab", "g0", "offline")
    mine = replace(SPEC, project="mine", entity="me", group="g1", wandb_mode="online")
    run = decide_run(mine, "grpo", "x", None, env, "r1")
    assert (run.project, run.entity, run.group, run.wandb_mode) == ("mine", "me", "g1", "online")


def test_a_sweeps_points_share_a_group_and_are_named_by_point():
    point = {"sweep_dir": "/jobs/sweeps/20261202-060000", "index": 3, "overrides": ["grpo.learning_rate=1e-5"]}
    run = decide_run(replace(SPEC, tags=["lr"]), "deepmath", "f", point, {"WANDB_RUN_GROUP": "ignored"}, "r1")
    assert (run.group, run.name, run.tags) == ("sweep-20261202-060000", "deepmath-3", ["lr", "sweep-20261202-060000"])
    assert decide_run(replace(SPEC, group="mine"), "deepmath", "f", point, {}, "r1").group == "mine"


def test_the_trainer_env_continues_the_run_and_holds_no_secret(tmp_path):
    run = TrackingRun(run_id="abc12345", project="p", name="n", entity="e", group="g", tags=["a", "b"],
                      wandb_mode="offline")
    env = tracking_env(SPEC, run, tmp_path)
    assert env == {"WANDB_RUN_ID": "abc12345", "WANDB_RESUME": "allow", "WANDB_PROJECT": "p", "WANDB_NAME": "n",
                   "WANDB_DIR": str(tmp_path),
                   "WANDB_ENTITY": "e", "WANDB_RUN_GROUP": "g", "WANDB_MODE": "offline", "WANDB_TAGS": "a,b",
                   "TENSORBOARD_LOGGING_DIR": str(tmp_path / "tensorboard")}
    assert tracking_env(TrackingSpec(backends=["tensorboard"]), run, tmp_path) == {
        "TENSORBOARD_LOGGING_DIR": str(tmp_path / "tensorboard")}


def submitted(tmp_path, monkeypatch, *overrides: str) -> tuple[Path, Plan]:
    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret-0123456789")
    cfg = compose("cluster=local", *overrides)
    plan = build_plan(cfg)
    job_dir = create_job_dir(tmp_path, plan.name)
    write_snapshot(job_dir, plan, cfg, git=("not a git repository\n", ""))
    return job_dir, plan


def test_submission_keeps_one_run_that_every_attempt_reads_back(tmp_path, monkeypatch):
    job_dir, plan = submitted(tmp_path, monkeypatch, BOTH)
    kept = read_run(job_dir)
    assert kept is not None and kept.name == f"{plan.name}-{job_dir.name}"
    attempts = [job_tracking_env(plan, job_dir, {}) for _ in range(2)]  # every attempt, any node
    assert attempts[0] == attempts[1] and attempts[0]["WANDB_RUN_ID"] == kept.run_id
    assert oct((job_dir / names.TRACKING).stat().st_mode & 0o777) == "0o600"
    config = (job_dir / names.WANDB_CONFIG).read_text()
    assert "launch:" in config and "value:" in config and "name_or_path" in config
    for name in (names.TRACKING, names.WANDB_CONFIG, names.PLAN, names.CONFIG, names.PLAN_TEXT):
        assert "wandb-secret-0123456789" not in (job_dir / name).read_text(), name


def test_counter_without_the_kept_record_every_attempt_would_get_its_own_id(tmp_path, monkeypatch):
    """What the kept record prevents: the run decided again (tracking.json gone) is another W&B run."""
    job_dir, plan = submitted(tmp_path, monkeypatch, BOTH)
    first = job_tracking_env(plan, job_dir, {})["WANDB_RUN_ID"]
    (job_dir / names.TRACKING).unlink()
    second = job_tracking_env(plan, job_dir, {})["WANDB_RUN_ID"]
    assert first != second


def test_a_folder_without_a_record_gets_one_and_the_first_writer_wins(tmp_path, monkeypatch):
    job_dir, plan = submitted(tmp_path, monkeypatch, BOTH)
    kept = read_run(job_dir)
    (job_dir / names.TRACKING).unlink()
    made = ensure_run(job_dir, plan, {})  # in the job, on whichever node is first
    assert made is not None and made.run_id != kept.run_id and read_run(job_dir) == made
    assert ensure_run(job_dir, plan, {}) == made  # the others read it


def test_no_record_without_wandb_or_tensorboard(tmp_path, monkeypatch):
    job_dir, plan = submitted(tmp_path, monkeypatch)
    assert not (job_dir / names.TRACKING).exists() and job_tracking_env(plan, job_dir, {}) == {}


def test_the_login_path_imports_no_tracking_package():
    code = ("import sys\nfrom launcher.jobfolder import tracking, layout\nfrom launcher.validate import tracking as v\n"
            "from launcher.plan import build\nprint(sorted(m for m in ('wandb', 'tensorboard', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out


# ----------------------------------------------------------------------------- TensorBoard across attempts


def write_scalars(folder: Path, steps, tag: str = "train/loss") -> None:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(folder))
    for step in steps:
        writer.add_event(Event(step=step, wall_time=time.time(),
                               summary=Summary(value=[Summary.Value(tag=tag, simple_value=float(step))])))
    writer.close()


class FakeJob:
    def __init__(self, job_dir: Path, tracking, is_main: bool = True):
        self.job_dir, self.is_main = job_dir, is_main
        self.plan = type("P", (), {"tracking": tracking})()


def test_a_resumed_attempt_goes_on_from_its_checkpoint_and_the_counter_without_the_marker(tmp_path):
    from launcher.train.tracking import mark_resume

    for marked in (True, False):
        job_dir = tmp_path / ("marked" if marked else "unmarked")
        folder = job_dir / "tensorboard"
        folder.mkdir(parents=True)
        job = FakeJob(job_dir, SPEC)
        assert mark_resume(job, None) is None  # attempt 1: nothing written before it
        write_scalars(folder, range(1, 8))  # attempt 1 logged 1..7, its last checkpoint was at 4
        if marked:
            assert mark_resume(job, str(job_dir / "output" / "checkpoint-4")) == 5
        write_scalars(folder, range(5, 11))  # attempt 2 resumed from checkpoint-4
        assert event_file_steps(folder, "train/loss") == [list(range(1, 8)), list(range(5, 11))]
        shown = shown_steps(folder, "train/loss")
        assert one_axis(shown) is marked, shown
        if marked:
            assert shown == list(range(1, 11))


def test_only_rank_zero_marks_and_only_for_tensorboard(tmp_path):
    from launcher.train.tracking import mark_resume, resume_step

    folder = tmp_path / "tensorboard"
    folder.mkdir()
    write_scalars(folder, [1, 2])
    assert mark_resume(FakeJob(tmp_path, SPEC, is_main=False), "checkpoint-2") is None
    assert mark_resume(FakeJob(tmp_path, TrackingSpec(backends=["wandb"])), "checkpoint-2") is None
    assert mark_resume(FakeJob(tmp_path, SPEC), True) is None  # a script's resume=True: the step is not known here
    assert len(list(folder.iterdir())) == 1
    assert (resume_step(None), resume_step("/o/checkpoint-12"), resume_step("/o/checkpoint-12/")) == (0, 12, 12)


def test_one_axis_and_offline_runs_read_what_they_claim(tmp_path):
    assert one_axis([1, 2, 5]) and not one_axis([1, 2, 2]) and not one_axis([1, 3, 1])
    for stamp, run_id in (("20261202_060000", "abc"), ("20261202_060100", "def")):
        (tmp_path / "wandb" / f"offline-run-{stamp}-{run_id}").mkdir(parents=True)
    assert [i for i, _ in offline_runs(tmp_path)] == ["abc", "def"]  # two ids: what the cluster test rejects


def test_the_docs_say_how_to_sync_an_offline_run():
    text = (REPO / "docs" / "tracking.md").read_text()
    assert "wandb sync" in text and "grpo.report_to" in text


def test_the_launch_config_joins_the_wandb_runs_config(tmp_path, monkeypatch):
    """A real W&B run (offline, in tmp_path): the callback adds wandb-config.yaml's launch config and sweep
    point to the config TRL logged; without W&B in grpo.report_to there is no callback."""
    import wandb
    from transformers import TrainerState

    from launcher.train.tracking import tracking_callbacks

    (tmp_path / names.WANDB_CONFIG).write_text(
        "launch:\n  value: {name: smoke, model: {name_or_path: tiny}}\nsweep_point:\n  value: {index: 3}\n")
    assert tracking_callbacks(FakeJob(tmp_path, TrackingSpec(backends=["tensorboard"]))) == []
    (callback,) = tracking_callbacks(FakeJob(tmp_path, SPEC))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run = wandb.init(project="p", config={"max_steps": 8})
    try:
        callback.on_train_begin(None, TrainerState(), None)
        assert run.config["launch"] == {"name": "smoke", "model": {"name_or_path": "tiny"}}
        assert run.config["sweep_point"] == {"index": 3} and run.config["max_steps"] == 8
    finally:
        run.finish()
