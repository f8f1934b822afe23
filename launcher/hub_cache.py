"""The Hugging Face cache on disk, read without huggingface_hub (stdlib only, for the login node and the job):
where it is, and whether a repo's revision is in it.

    <hf_home>/hub/models--<org>--<name>/refs/<branch or tag>     the commit it points at
    <hf_home>/hub/models--<org>--<name>/snapshots/<commit>/...   the files of that commit
    <hf_home>/hub/datasets--<org>--<name>/...                    the same for a dataset

`cluster.hf_home` is the HF_HOME the nodes share; the job gets HF_HOME and HF_HUB_CACHE = <hf_home>/hub
(a HF_HUB_CACHE elsewhere in the submitting shell would make the job look where nothing was staged), and,
offline, HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1, TRANSFORMERS_OFFLINE=1.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Mapping, Optional

COMMIT = re.compile(r"^[0-9a-f]{40}$")
WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# what a dataset repo holds besides its data
NOT_DATA = {"README.md", ".gitattributes", "LICENSE", "LICENSE.md"}
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def default_hf_home(environ: Mapping[str, str]) -> str:
    """Where huggingface_hub puts its cache when nothing says otherwise: $HF_HOME, else
    $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface (absolute)."""
    home = environ.get("HF_HOME") or os.path.join(environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return os.path.abspath(os.path.expanduser(home))


def hub_dir(hf_home: str) -> Path:
    return Path(os.path.expanduser(hf_home)) / "hub"


def job_env(hf_home: str, offline: bool) -> dict[str, str]:
    """What the job exports so that it reads the cache the launcher staged into (and nothing else, offline)."""
    env = {"HF_HOME": str(Path(os.path.expanduser(hf_home))), "HF_HUB_CACHE": str(hub_dir(hf_home))}
    return {**env, **OFFLINE_ENV} if offline else env


def repo_dir(hub: Path, kind: str, repo_id: str) -> Path:
    """kind: "model" | "dataset"."""
    return Path(hub) / f"{kind}s--{repo_id.replace('/', '--')}"


def snapshot(hub: Path, kind: str, repo_id: str, revision: Optional[str] = None) -> Optional[Path]:
    """The snapshot folder of repo_id at revision (a branch or tag through refs/, or a commit), when cached."""
    root = repo_dir(hub, kind, repo_id)
    revision = revision or "main"
    commit: Optional[str] = None
    try:
        commit = (root / "refs" / revision).read_text().strip()
    except OSError:
        if COMMIT.match(revision):
            commit = revision
    if not commit:
        return None
    folder = root / "snapshots" / commit
    return folder if folder.is_dir() else None


def _files(folder: Path) -> list[str]:
    return [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]  # a dangling link is no file


def missing(kind: str, folder: Optional[Path]) -> Optional[str]:
    """What a cached snapshot lacks to be used (None: nothing). A model needs config.json and its weights (every
    shard its index names); a dataset needs a data file. A snapshot only ever holds complete files."""
    if folder is None:
        return "not in the cache"
    files = _files(folder)
    if kind == "dataset":
        return None if any(Path(f).name not in NOT_DATA for f in files) else "no data file in the snapshot"
    if "config.json" not in files:
        return "no config.json in the snapshot"
    for index in (f for f in files if f.endswith(".index.json")):
        try:
            shards = set(json.loads((folder / index).read_text()).get("weight_map", {}).values())
        except (OSError, ValueError):
            continue
        lacking = sorted(shards - set(files))
        if lacking:
            return f"{len(lacking)} weight shard(s) missing, e.g. {lacking[0]}"
    return None if any(f.endswith(WEIGHTS) for f in files) else "no weights in the snapshot"


def model_config(hub: Path, repo_id: str, revision: Optional[str]) -> Optional[tuple[dict, Path]]:
    """(config.json, its path) of a cached model, or None."""
    folder = snapshot(hub, "model", repo_id, revision)
    if folder is None:
        return None
    try:
        return json.loads((folder / "config.json").read_text()), folder / "config.json"
    except (OSError, ValueError):
        return None
