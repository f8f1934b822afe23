"""Is a name a local path or a hub id? One heuristic for validation (on the login node) and the trainer
(in the job), so that both read `model.name_or_path` / `data.name_or_path` the same way. Stdlib only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# org/name, as the Hugging Face Hub spells repository ids
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
# files the trainer loads as a dataset (datasets' json, parquet, csv, arrow builders)
DATA_FILE_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".arrow")


def local_path(name: str) -> Path:
    """The name as a path on this machine (`~` expanded)."""
    return Path(os.path.expanduser(name))


def looks_local(name: str) -> bool:
    """True for what can only be a path: absolute, relative (./, ../), home (~), a data file, or anything
    that is not an org/name hub id. A hub id that also exists as a local folder is for the caller to try."""
    return name.startswith(("/", ".", "~")) or name.endswith(DATA_FILE_SUFFIXES) or not HUB_ID.match(name)
