"""Offline compute nodes on the real cluster (its nodes have no internet): a Hugging Face cache built here in
the hub's own layout (tests/hub_cache.py), then one het job that loads the model (vLLM, the tokenizer) and the
dataset BY HUB ID with cluster.offline=true; and the same hub id without the cache, the user's first day:
the server fails in seconds and the failure leads with transformers' own line, in result.json and the jobs
CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hub_cache import add_folder, add_repo
from launcher.jobfolder.layout import latest_attempt

from .conftest import launch, wait_no_orphans, wait_state

pytestmark = pytest.mark.cluster

MODEL, DATA = "acme/tiny-chat", "acme/math-tiny"


def test_a_job_loads_model_and_dataset_by_hub_id_offline(cluster_env, smoke_assets, tmp_path):
    home = tmp_path / "hf"
    add_folder(home / "hub", "model", MODEL, smoke_assets / "model")
    add_repo(home / "hub", "dataset", DATA, {"data/train.jsonl": (smoke_assets / "data" / "train.jsonl").read_bytes()})
    job = launch(cluster_env, tmp_path / "jobs", "cluster.offline=true", f"cluster.hf_home={home}",
                 f"model.name_or_path={MODEL}", f"data.name_or_path={DATA}", "trainer.preflight=true")
    assert f"launcher: offline: model {MODEL}@main is in {home / 'hub'}" in job.output  # staged: nothing to fetch
    assert wait_state(job.job_id, 900) == "COMPLETED", job.result()
    server_log = (job.attempt / "server.log").read_text()
    trainer_log = (job.attempt / "trainer.log").read_text()
    assert f"trl vllm-serve --model {MODEL} " in server_log  # vLLM got the hub id, not a path
    preflight = json.loads((job.attempt / "preflight.json").read_text())
    assert preflight["completions"] > 0, preflight
    assert "HF_HUB_OFFLINE=1" in (job.job_dir / "plan.txt").read_text()
    assert "export HF_DATASETS_OFFLINE=1" in (job.job_dir / "job.sbatch").read_text()
    print(f"\nMEASURED offline job: {preflight.get('completions')} completions; trainer log tail: "
          f"{trainer_log.strip().splitlines()[-1][:160]}")
    assert wait_no_orphans() == []


def test_a_hub_model_the_offline_nodes_cannot_fetch_fails_with_its_cause(cluster_env, smoke_assets, tmp_path):
    """cluster.offline left false: the server tries huggingface.co from a node without internet."""
    empty = tmp_path / "hf-empty"
    job = launch(cluster_env, tmp_path / "jobs", f"cluster.hf_home={empty}", "model.name_or_path=acme/not-cached")
    assert wait_state(job.job_id, 300) == "FAILED"
    result = job.result()
    summary = result["reason"].splitlines()[0]
    # both components load the model at once (the overlapped start): whichever fails first names the cause
    first = {"server": "server exited with code 1 before becoming healthy",
             "trainer": "trainer exited with code 1 while the server was starting"}
    component = next((name for name, start in first.items() if summary.startswith(start)), None)
    assert component is not None, summary
    log = job.attempt / f"{component}.log"
    assert summary == (f"{first[component]}: OSError: We couldn't connect to "
                       "'https://huggingface.co' to load the files, and couldn't find them in the cached files. "
                       f"(full log: {log})"), summary
    status = subprocess.run([sys.executable, "-m", "launcher.jobs", "status", str(job.job_dir)], capture_output=True,
                            text=True, env=cluster_env, timeout=60)
    assert status.returncode == 0, status.stderr
    assert "OSError: We couldn't connect to 'https://huggingface.co'" in status.stdout, status.stdout
    assert latest_attempt(job.job_dir) == job.attempt
    assert wait_no_orphans() == []
