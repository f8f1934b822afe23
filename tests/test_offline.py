"""Offline compute nodes (cluster.offline): a Hugging Face cache built here in the hub's own layout
(tests/hub_cache.py), the dry-run and the checks that read a cached model's config.json, staging that skips
what is there and refuses what it cannot fetch (this machine has no network: huggingface_hub's real error),
and the job side loading a dataset by hub id from the cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import compose, fake_executable
from hub_cache import add_repo, repo_folder
from launcher import hub_cache
from launcher.plan.build import build_plan
from launcher.plan.hub_repos import cache_status, hub_repos
from launcher.validate.problems import InvalidConfig

MODEL, DATA = "acme/tiny-chat", "acme/math-tiny"
CONFIG = {"num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048}


@pytest.fixture
def hf_home(tmp_path) -> Path:
    """A cache with the model (config + weights) and the dataset (two splits) under refs/main."""
    home = tmp_path / "hf"
    add_repo(home / "hub", "model", MODEL, {"config.json": json.dumps(CONFIG).encode(), "model.safetensors": b"w"})
    rows = [{"prompt": [{"role": "user", "content": f"{i}+1?"}], "solution": str(i + 1)} for i in range(6)]
    jsonl = lambda part: "".join(json.dumps(r) + "\n" for r in part).encode()  # noqa: E731
    add_repo(home / "hub", "dataset", DATA, {"data/train.jsonl": jsonl(rows), "data/test.jsonl": jsonl(rows[:2])})
    return home


def offline(home: Path, *overrides: str):
    return compose("+experiment=smoke", "cluster=slurm", "cluster.offline=true", f"cluster.hf_home={home}",
                   f"model.name_or_path={MODEL}", f"data.name_or_path={DATA}", *overrides)


# ----------------------------------------------------------------------------- the cache, read by hand


def test_snapshot_by_branch_tag_and_commit(hf_home):
    hub = hf_home / "hub"
    commit = (repo_folder(hub, "model", MODEL) / "refs" / "main").read_text()
    assert hub_cache.snapshot(hub, "model", MODEL) == repo_folder(hub, "model", MODEL) / "snapshots" / commit
    assert hub_cache.snapshot(hub, "model", MODEL, commit) == hub_cache.snapshot(hub, "model", MODEL, "main")
    assert hub_cache.snapshot(hub, "model", MODEL, "v2") is None
    tagged = add_repo(hub, "model", MODEL, {"config.json": b"{}", "model.safetensors": b"v2"}, ref="v2")
    assert hub_cache.snapshot(hub, "model", MODEL, "v2").name == tagged != commit
    assert hub_cache.snapshot(hub, "dataset", MODEL) is None  # a model is not a dataset


def test_what_a_snapshot_lacks(tmp_path):
    hub = tmp_path / "hub"
    add_repo(hub, "model", "a/config-only", {"config.json": b"{}"})
    add_repo(hub, "model", "a/sharded", {"config.json": b"{}", "model-00001-of-00002.safetensors": b"1",
                                         "model.safetensors.index.json": json.dumps({"weight_map": {
                                             "x": "model-00001-of-00002.safetensors",
                                             "y": "model-00002-of-00002.safetensors"}}).encode()})
    add_repo(hub, "dataset", "a/card-only", {"README.md": b"# card"})
    snap = lambda kind, repo: hub_cache.snapshot(hub, kind, repo)  # noqa: E731
    assert hub_cache.missing("model", snap("model", "a/config-only")) == "no weights in the snapshot"
    assert hub_cache.missing("model", snap("model", "a/sharded")) == \
        "1 weight shard(s) missing, e.g. model-00002-of-00002.safetensors"
    assert hub_cache.missing("dataset", snap("dataset", "a/card-only")) == "no data file in the snapshot"
    assert hub_cache.missing("model", None) == "not in the cache"


def test_default_cache_follows_huggingface_hub():
    assert hub_cache.default_hf_home({"HF_HOME": "/shared/hf"}) == "/shared/hf"
    assert hub_cache.default_hf_home({"XDG_CACHE_HOME": "/x"}) == "/x/huggingface"
    assert hub_cache.default_hf_home({}) == os.path.expanduser("~/.cache/huggingface")


# ----------------------------------------------------------------------------- the plan and its checks


def test_offline_plan_exports_the_cache_and_the_offline_switches(hf_home, monkeypatch):
    plan = build_plan(offline(hf_home, "+cluster.env.HF_DATASETS_OFFLINE=0"))
    assert plan.offline and plan.hf_home == str(hf_home)
    assert plan.env == {"HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"), "HF_HUB_OFFLINE": "1",
                        "HF_DATASETS_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "1"}  # cluster.env has the last word
    assert [str(r) for r in hub_repos(plan)] == [f"model {MODEL}@main", f"dataset {DATA}@main"]
    assert [c.missing for c in cache_status(plan)] == [None, None]
    monkeypatch.setenv("HF_HOME", str(hf_home))  # null: the cache huggingface_hub would use here
    assert compose("+experiment=smoke", "cluster.offline=true").cluster.hf_home == str(hf_home)
    assert build_plan(compose("+experiment=smoke", "cluster=slurm")).env == {}  # online, no cache set: nothing


def test_a_cached_models_config_feeds_the_checks(hf_home):
    with pytest.raises(InvalidConfig) as error:
        build_plan(offline(hf_home, "server.tensor_parallel_size=3", "server.gpus_per_node=3"))
    snapshot = hub_cache.snapshot(hf_home / "hub", "model", MODEL)
    assert str(error.value) == ("server.tensor_parallel_size: TP = 3 must divide the model's attention heads "
                                f"(4, from {snapshot}/config.json)")
    with pytest.raises(InvalidConfig) as error:
        build_plan(offline(hf_home, "server.max_model_len=4096"))
    assert str(error.value).startswith("server.max_model_len: 4096 is longer than the model's context (2048 tokens")
    with pytest.raises(InvalidConfig) as error:
        build_plan(offline(hf_home, "server.max_model_len=null", "grpo.max_completion_length=2048"))
    assert str(error.value).startswith("grpo.max_completion_length: completions of up to 2048 tokens")
    # the same hub id without a cache to read: the checks cannot run (as before)
    assert build_plan(compose("+experiment=smoke", "cluster=slurm", f"model.name_or_path={MODEL}",
                              "server.tensor_parallel_size=3", "server.gpus_per_node=3"))


LIGHT = """
import atexit, json, runpy, sys
sys.argv = ["launcher", *json.loads(sys.argv[1])]
atexit.register(lambda: print("MODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr))
runpy.run_module("launcher", run_name="__main__")
"""


def run_launcher(args: list[str], env: dict, cwd: Path, light: bool = False) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-c", LIGHT, json.dumps(args)] if light else [sys.executable, "-m", "launcher", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


@pytest.fixture
def fake_slurm(tmp_path) -> tuple[dict, Path]:
    """sbatch that records its calls, sinfo with the test cluster's partitions; this machine has no network."""
    record = tmp_path / "sbatch-calls"
    fake_executable(tmp_path / "bin", "sbatch", f"echo \"$*\" >> {record}\necho 'Submitted batch job 7'\n")
    fake_executable(tmp_path / "bin", "sinfo", "echo 'debug|gpu:2|3|infinite|debug*'\n")
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    env.pop("SLURM_CONF", None)
    return env, record


def test_dry_run_says_what_staging_would_do_and_stays_light(hf_home, fake_slurm, tmp_path):
    env, record = fake_slurm
    args = ["+experiment=smoke", "cluster=slurm", "cluster.offline=true", f"cluster.hf_home={hf_home}",
            f"model.name_or_path={MODEL}", "data.name_or_path=acme/not-here", "dry_run=true"]
    out = run_launcher(args, env, tmp_path, light=True)
    assert out.returncode == 0, out.stderr
    snapshot = hub_cache.snapshot(hf_home / "hub", "model", MODEL)
    assert f"  offline: model {MODEL}@main: in {hf_home / 'hub'} ({snapshot.name[:12]}), nothing to download" \
        in out.stdout.splitlines()
    assert f"  offline: dataset acme/not-here@main: not in the cache ({hf_home / 'hub'}): downloaded at submission" \
        in out.stdout.splitlines()
    assert "export HF_HUB_OFFLINE=1" in out.stdout  # the script exports the switches
    modules = json.loads(next(l for l in out.stderr.splitlines() if l.startswith("MODULES "))[len("MODULES "):])
    assert [m for m in modules if m.split(".")[0] in ("huggingface_hub", "torch", "datasets", "transformers")] == []
    assert not record.exists()


def test_staging_skips_what_is_there_without_huggingface_hub(hf_home, fake_slurm, tmp_path):
    env, record = fake_slurm
    args = ["+experiment=smoke", "cluster=slurm", "cluster.offline=true", f"cluster.hf_home={hf_home}",
            f"model.name_or_path={MODEL}", f"data.name_or_path={DATA}", f"cluster.job_root={tmp_path / 'jobs'}"]
    out = run_launcher(args, env, tmp_path, light=True)
    assert out.returncode == 0, out.stderr
    assert "submitted job 7" in out.stdout and record.read_text().count("\n") == 1
    assert f"launcher: offline: model {MODEL}@main is in {hf_home / 'hub'}" in out.stderr
    assert f"launcher: offline: dataset {DATA}@main is in {hf_home / 'hub'}" in out.stderr
    modules = json.loads(next(l for l in out.stderr.splitlines() if l.startswith("MODULES "))[len("MODULES "):])
    assert "huggingface_hub" not in modules  # nothing to download: the hub client is never imported
    script = next((tmp_path / "jobs").glob("smoke/*/job.sbatch")).read_text()
    assert f"export HF_HUB_CACHE={hf_home / 'hub'}" in script and "export HF_DATASETS_OFFLINE=1" in script


def test_what_cannot_be_staged_is_refused_before_queueing(hf_home, fake_slurm, tmp_path):
    """This machine has no network either: huggingface_hub's real connection error, exit 2, nothing queued."""
    env, record = fake_slurm
    add_repo(hf_home / "hub", "model", "acme/config-only", {"config.json": json.dumps(CONFIG).encode()})
    args = ["+experiment=smoke", "cluster=slurm", "cluster.offline=true", f"cluster.hf_home={hf_home}",
            "model.name_or_path=acme/config-only", "data.name_or_path=acme/not-here", "data.revision=v1",
            f"cluster.job_root={tmp_path / 'jobs'}"]
    out = run_launcher(args, env, tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.splitlines()
    start = lines.index("launcher: invalid configuration, nothing was submitted:")
    model, data = lines[start + 1:start + 3]
    hub = hf_home / "hub"
    assert model.startswith("  - cluster.offline, model.name_or_path: model acme/config-only@main is not usable from "
                            f"the Hugging Face cache {hub} (no weights in the snapshot) and cannot be staged from here: ")
    assert data.startswith("  - cluster.offline, data.name_or_path: dataset acme/not-here@v1 is not usable from the "
                           f"Hugging Face cache {hub} (not in the cache) and cannot be staged from here: ")
    assert f"(`hf download acme/not-here --repo-type dataset --revision v1 --cache-dir {hub}`)" in data
    assert not record.exists() and not (tmp_path / "jobs").exists()


# ----------------------------------------------------------------------------- in the job


def test_the_job_loads_a_hub_dataset_from_the_cache_offline(hf_home, monkeypatch):
    pytest.importorskip("datasets")
    from launcher.plan.plan import DataSpec
    from launcher.train.data import load_train_dataset
    from launcher.train.errors import JobError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(hf_home / "datasets"))
    ds = load_train_dataset(DataSpec(name_or_path=DATA, split="train"))
    assert len(ds) == 6 and ds[0]["solution"] == "1"
    assert len(load_train_dataset(DataSpec(name_or_path=DATA, split="test"))) == 2
    with pytest.raises(JobError) as error:
        load_train_dataset(DataSpec(name_or_path=DATA, split="train", revision="v9"))
    assert str(error.value).startswith(f"dataset {DATA}@v9 is not in the Hugging Face cache {hf_home / 'hub'}")
    assert "cluster.offline=true" in str(error.value)


# ----------------------------------------------------------------------------- downloads, from a hub stand-in


def test_staging_downloads_what_is_missing_then_skips_it(fake_slurm, tmp_path):
    """huggingface_hub for real, against tests/fake_hub.py on 127.0.0.1 (HF_ENDPOINT): progress bars, the other
    weight formats left out, then a second launch that asks the hub nothing."""
    from fake_hub import FakeHub

    env, record = fake_slurm
    home = tmp_path / "hf"
    rows = "".join(json.dumps({"prompt": [{"role": "user", "content": "1+1?"}], "solution": "2"}) + "\n"
                   for _ in range(4)).encode()
    args = ["+experiment=smoke", "cluster=slurm", "cluster.offline=true", f"cluster.hf_home={home}",
            f"model.name_or_path={MODEL}", f"data.name_or_path={DATA}", f"cluster.job_root={tmp_path / 'jobs'}"]
    with FakeHub() as hub:
        hub.add("model", MODEL, {"config.json": json.dumps(CONFIG).encode(), "model.safetensors": b"w" * 4096,
                                 "pytorch_model.bin": b"b" * 4096, "tokenizer.json": b"{}"})
        hub.add("dataset", DATA, {"README.md": b"# data", "data/train.jsonl": rows})
        env = dict(env, HF_ENDPOINT=hub.url)
        first = run_launcher(args, env, tmp_path)
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"launcher: offline: staging model {MODEL}@main into {home / 'hub'} (not in the cache)" in first.stderr
        assert "Fetching 3 files: 100%" in first.stderr and "Fetching 2 files: 100%" in first.stderr  # progress
        snapshot = hub_cache.snapshot(home / "hub", "model", MODEL)
        assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
        assert hub_cache.missing("dataset", hub_cache.snapshot(home / "hub", "dataset", DATA)) is None
        assert "submitted job 7" in first.stdout
        asked = len(hub.requests)
        second = run_launcher(args, env, tmp_path)
        assert second.returncode == 0, second.stderr
        assert f"launcher: offline: model {MODEL}@main is in {home / 'hub'}" in second.stderr
        assert len(hub.requests) == asked  # what is there is skipped without asking the hub
        # a model staged just now is checked like a local one before anything is queued
        three = {"num_attention_heads": 3, "num_key_value_heads": 3, "max_position_embeddings": 2048}
        hub.add("model", "acme/three-heads", {"config.json": json.dumps(three).encode(), "model.safetensors": b"w"})
        tp = run_launcher(args + ["model.name_or_path=acme/three-heads", "server.tensor_parallel_size=2"], env,
                          tmp_path)
    assert tp.returncode == 2, tp.stdout + tp.stderr
    assert "launcher: offline: staged model acme/three-heads@main" in tp.stderr
    assert "server.tensor_parallel_size: TP = 2 must divide the model's attention heads (3, from " in tp.stderr
    assert record.read_text().count("\n") == 2  # the two launches that were valid
