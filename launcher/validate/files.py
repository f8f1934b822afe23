"""Rules on paths and files: the model and the dataset (a hub id, or a local path that exists), the
interpreter the nodes run, and the folder job folders go to.
"""

from __future__ import annotations

import os
from pathlib import Path

from launcher.config.schema import LaunchConfig
from launcher.paths import local_path, looks_local
from launcher.validate.problems import Facts, Problem


def check_paths(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    problems = []
    named = [("model.name_or_path", cfg.model.name_or_path)]
    if cfg.data.mixture:  # the datasets of a mixture instead of data.name_or_path
        named += [(f"data.mixture[{i}].name_or_path", m.name_or_path) for i, m in enumerate(cfg.data.mixture)]
    elif cfg.data.name_or_path is not None:  # None: launcher.validate.columns says it is required
        named.append(("data.name_or_path", cfg.data.name_or_path))
    for key, value in named:
        if not isinstance(value, str) or not value.strip():
            problems.append(Problem((key,), "must be a hub id (org/name) or a local path"))
        elif looks_local(value) and not local_path(value).exists():
            hint = " (build the smoke assets: python scripts/make_smoke_assets.py)" if "/smoke/" in value else ""
            problems.append(Problem((key,), f"local path {value} does not exist{hint}"))
    return problems


def check_local_files(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    """The interpreter the nodes run and the folder job folders go to (a shared filesystem is assumed)."""
    problems = []
    python = cfg.cluster.python
    if python and os.path.isabs(os.path.expanduser(python)) and not os.access(os.path.expanduser(python), os.X_OK):
        problems.append(Problem(("cluster.python",), f"{python} is not an executable file here (fine only if the "
                                                     "nodes have it at that path)", severity="warning"))
    root = Path(os.path.expanduser(str(cfg.cluster.job_root)))
    existing = next((p for p in [root, *root.absolute().parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        problems.append(Problem(("cluster.job_root",), f"{existing} is a file, not a folder"))
    elif existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        problems.append(Problem(("cluster.job_root",), f"{existing} is not writable: job folders cannot be made there"))
    return problems
