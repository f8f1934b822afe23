"""Offline compute nodes (cluster.offline): before anything is queued, the plan's hub model and dataset are
staged into the Hugging Face cache the nodes share (plan.hf_home), so that the job, run with HF_HUB_OFFLINE=1
and HF_DATASETS_OFFLINE=1, finds them by hub id.

What the cache already holds (a snapshot of that revision with its config and weights, or its data files) is
skipped without asking the hub. The rest is downloaded with huggingface_hub's snapshot_download, imported here
only, and only then (it imports no torch), with its progress bars on the terminal; a model repo that has
safetensors is downloaded without its other weight formats. When a repo cannot be staged (this machine is
offline too, the repo does not exist or is gated, huggingface_hub is not installed) the launch is refused:
InvalidConfig naming cluster.offline and the repo, exit 2, nothing queued.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from launcher import hub_cache
from launcher.plan.hub_repos import Cached, HubRepo, cache_status
from launcher.validate.problems import InvalidConfig, Problem

# other weight formats of a repo that has safetensors: vLLM and transformers load the safetensors
OTHER_WEIGHTS = ["*.bin", "*.pt", "*.pth", "*.gguf", "*.onnx", "*.msgpack", "*.h5", "*.ot", "original/*"]


def _how_to_fetch(repo: HubRepo, hub: str) -> str:
    kind = " --repo-type dataset" if repo.kind == "dataset" else ""
    revision = f" --revision {repo.revision}" if repo.revision else ""
    return f"hf download {repo.repo_id}{kind}{revision} --cache-dir {hub}"


def _refusal(cached: Cached, hub: str, why: str) -> Problem:
    repo = cached.repo
    return Problem(("cluster.offline", repo.key),
                   f"{repo} is not usable from the Hugging Face cache {hub} ({cached.missing}) and cannot be staged "
                   f"from here: {why}. Download it where the hub is reachable into that cache "
                   f"(`{_how_to_fetch(repo, hub)}`), or set cluster.hf_home to a cache that holds it")


def _download(repo: HubRepo, hub: str) -> None:
    from huggingface_hub import HfApi, snapshot_download

    ignore = None
    if repo.kind == "model":
        files = HfApi().list_repo_files(repo.repo_id, repo_type="model", revision=repo.revision)
        ignore = OTHER_WEIGHTS if any(f.endswith(".safetensors") for f in files) else None
    snapshot_download(repo.repo_id, repo_type=repo.kind, revision=repo.revision, cache_dir=hub,
                      ignore_patterns=ignore)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def stage(plan: Any, out: TextIO = sys.stderr) -> int:
    """Stage what the cache lacks; the number of repos downloaded. InvalidConfig when one cannot be staged."""
    hub = str(hub_cache.hub_dir(plan.hf_home))
    problems, downloaded = [], 0
    for cached in cache_status(plan):
        repo = cached.repo
        if cached.missing is None:
            print(f"launcher: offline: {repo} is in {hub} ({cached.snapshot.name[:12]}), nothing to download",
                  file=out, flush=True)
            continue
        print(f"launcher: offline: staging {repo} into {hub} ({cached.missing})", file=out, flush=True)
        try:
            _download(repo, hub)
        except ImportError:
            problems.append(_refusal(cached, hub, "huggingface_hub is not installed here (pip install "
                                                  "'launcher[hub]', or pip install huggingface_hub)"))
            continue
        except Exception as error:  # noqa: BLE001 - offline, not found, gated, disk full: the repo is not there
            problems.append(_refusal(cached, hub, _first_line(error)))
            continue
        again = [c for c in cache_status(plan) if c.repo == repo][0]
        if again.missing is not None:
            problems.append(_refusal(again, hub, "the download left it incomplete"))
            continue
        downloaded += 1
        print(f"launcher: offline: staged {repo} ({again.snapshot.name[:12]})", file=out, flush=True)
    if problems:
        raise InvalidConfig(problems)
    return downloaded
