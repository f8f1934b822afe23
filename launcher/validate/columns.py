"""The dataset columns a launch needs, and, for a local data file, whether it has them: checked before
anything is queued, from the file's first rows (json/jsonl/csv with the stdlib) or a parquet file's footer
(launcher.validate.parquet_schema, stdlib too: datasets and pyarrow are never imported on the login node). A
dataset folder, a hub dataset, or a file whose columns cannot be read here is checked in the job, as soon as
the trainer has loaded it (launcher.train.data), before the model loads and the server is needed.

`needed_columns` is shared by both checks: the column -> the key that asks for it.
"""

from __future__ import annotations

import csv
import json
import string
from pathlib import Path
from typing import Iterable, Mapping, Optional

from launcher.config.schema import LaunchConfig
from launcher.paths import local_path
from launcher.validate.parquet_schema import ParquetError, parquet_columns
from launcher.validate.problems import Facts, Problem

HEAD_ROWS = 50  # rows read from a json/jsonl file: their keys together are the columns
# TRL's own reward functions and the dataset column each one is called with
TRL_REWARD_COLUMNS = {
    "trl.rewards.accuracy_reward": ("solution",),
    "trl.rewards.accuracy_rewards.accuracy_reward": ("solution",),
    "trl.rewards.reasoning_accuracy_reward": ("solution",),
    "trl.rewards.accuracy_rewards.reasoning_accuracy_reward": ("solution",),
}


def template_fields(template: str) -> list[str]:
    """The column names a prompt template uses ("Solve: {question}" -> ["question"]); ValueError if malformed."""
    names = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            if not name or not name.isidentifier():
                raise ValueError(f"{{{name}}} is not a column name (use {{column}}; a literal brace is {{{{ }}}})")
            names.append(name)
    return names


def needed_columns(prompt_column: str, prompt_template: Optional[str], reward_columns: Mapping[str, str],
                   reward_funcs: Iterable[str]) -> dict[str, str]:
    """Dataset column -> the config key that needs it."""
    needed: dict[str, str] = {}
    if prompt_template:
        for name in template_fields(prompt_template):
            needed.setdefault(name, "data.prompt_template")
    else:
        needed[prompt_column] = "data.prompt_column"
    for argument, column in reward_columns.items():
        needed.setdefault(str(column), f"data.reward_columns.{argument}")
    for func in reward_funcs:
        for argument in TRL_REWARD_COLUMNS.get(str(func), ()):
            if argument not in reward_columns:
                needed.setdefault(argument, f"reward.funcs ({func} needs a '{argument}' column; or map one "
                                            f"with data.reward_columns.{argument}=COLUMN)")
    return needed


def missing_columns(columns: Iterable[str], needed: Mapping[str, str], name: str) -> list[tuple[str, str]]:
    """(key, message) for each needed column the dataset lacks, naming the columns it has."""
    have = list(columns)
    return [(key, f"the dataset {name} has no column {column!r} (its columns: {', '.join(have) or 'none'})")
            for column, key in needed.items() if column not in have]


def file_columns(path: Path) -> Optional[list[str]]:
    """The columns of a local json/jsonl/csv file from its first rows, of a parquet file from its footer; None
    when that is not knowable here (arrow, a footer this reader does not understand: checked in the job)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            return parquet_columns(path)
        except ParquetError:
            return None
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return next(csv.reader(f), [])
    if suffix not in (".json", ".jsonl"):
        return None
    with path.open(encoding="utf-8") as f:
        head = f.read(1 << 16).lstrip()
    if head.startswith("["):  # one JSON array: read it whole only if small
        if path.stat().st_size > 64 << 20:
            return None
        rows = json.loads(path.read_text(encoding="utf-8"))[:HEAD_ROWS]
    else:
        rows = []
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    rows.append(json.loads(line))
                if len(rows) >= HEAD_ROWS:
                    break
    columns: dict[str, None] = {}
    for row in rows:
        if isinstance(row, dict):
            columns.update(dict.fromkeys(row))
    return list(columns)


def check_columns(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    d = cfg.data
    if not d.name_or_path and not d.mixture:
        if cfg.trainer.script and not cfg.trainer.preflight:
            return []  # the script loads its own dataset: the data keys feed the launcher's trainer and preflight
        return [Problem(("data.name_or_path",), "is required (a hub id, a local folder or file), or set data.mixture"
                        + ("; the preflight (trainer.preflight=true) generates from it" if cfg.trainer.script else ""))]
    try:
        needed = needed_columns(d.prompt_column, d.prompt_template, d.reward_columns, cfg.reward.funcs)
    except ValueError as error:
        return [Problem(("data.prompt_template",), str(error))]
    problems = []
    sources = [(f"data.mixture[{i}].name_or_path", m.name_or_path) for i, m in enumerate(d.mixture or [])] or [
        ("data.name_or_path", d.name_or_path)]
    if d.mixture and any(float(m.weight) <= 0 for m in d.mixture):
        problems.append(Problem(("data.mixture",), "every weight must be > 0"))
    for source_key, name in sources:
        path = local_path(name)
        if not path.is_file():
            continue  # a hub id or folder: checked in the job; a missing path: check_paths says so
        try:
            columns = file_columns(path)
        except (OSError, ValueError, UnicodeDecodeError) as error:
            problems.append(Problem((source_key,), f"{name} cannot be read as {path.suffix[1:]}: {error}"))
            continue
        if columns is not None:
            problems += [Problem((key, source_key), message) for key, message in missing_columns(columns, needed, name)]
    return problems
