"""The hub repos a plan names (its model and dataset, when they are hub ids rather than local paths) and
whether the Hugging Face cache the job reads (plan.hf_home) already holds them. Reads files only: the
dry-run says what staging would download, and staging (launcher/backends/staging.py) skips what is there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from launcher import hub_cache
from launcher.paths import looks_local


@dataclass(frozen=True)
class HubRepo:
    kind: str  # "model" | "dataset" (huggingface_hub's repo_type)
    repo_id: str
    revision: Optional[str]  # None: main
    key: str  # the config key that names it

    def __str__(self) -> str:
        return f"{self.kind} {self.repo_id}@{self.revision or 'main'}"


@dataclass(frozen=True)
class Cached:
    repo: HubRepo
    snapshot: Optional[Path]  # the snapshot folder of that revision, when there is one
    missing: Optional[str]  # what keeps it from being used (None: ready)


def hub_repos(plan: Any) -> list[HubRepo]:
    """The plan's model and dataset that come from the hub."""
    repos = []
    if not looks_local(plan.model.name_or_path):
        repos.append(HubRepo("model", plan.model.name_or_path, plan.model.revision, "model.name_or_path"))
    for i, source in enumerate(plan.data.sources()):
        if not looks_local(source["name_or_path"]):
            key = f"data.mixture[{i}].name_or_path" if plan.data.mixture else "data.name_or_path"
            repos.append(HubRepo("dataset", source["name_or_path"], source.get("revision"), key))
    return repos


def cache_status(plan: Any) -> list[Cached]:
    """Each hub repo of the plan against the cache in plan.hf_home."""
    hub = hub_cache.hub_dir(plan.hf_home)
    found = []
    for repo in hub_repos(plan):
        folder = hub_cache.snapshot(hub, repo.kind, repo.repo_id, repo.revision)
        found.append(Cached(repo, folder, hub_cache.missing(repo.kind, folder)))
    return found


def status_lines(plan: Any) -> list[str]:
    """What staging will do, one line per repo (the dry-run prints them)."""
    hub = hub_cache.hub_dir(plan.hf_home)
    return [f"{c.repo}: in {hub} ({c.snapshot.name[:12]}), nothing to download" if c.missing is None else
            f"{c.repo}: {c.missing} ({hub}): downloaded at submission" for c in cache_status(plan)]
