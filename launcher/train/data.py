"""What the trainer loads besides the model: the training dataset, the tokenizer/processor and the reward
functions, from the plan's DataSpec, ModelSpec and RewardSpec.

A dataset is a hub id, a local dataset folder (save_to_disk, or anything load_dataset reads) or a local
data file (.json, .jsonl, .parquet, .csv, .arrow: one "train" split). Offline (HF_HUB_OFFLINE /
HF_DATASETS_OFFLINE, as cluster.offline sets them), a hub id is read from its snapshot in the hub cache.

Its columns become what GRPOTrainer reads: "prompt" (data.prompt_column, or data.prompt_template filled from
columns, with data.system_prompt put first as a system message) and the reward functions' arguments
(data.reward_columns: argument -> column). Columns that are missing end the job at once (JobError, exit 2)
naming the key and the columns the dataset has (launcher.validate.columns, the same check as before queueing).
data.mixture: each dataset mapped so, then interleaved with its weight as the sampling probability (seeded by
data.seed; it stops when one dataset runs out, so the proportions hold).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from launcher import hub_cache
from launcher.paths import local_path, looks_local
from launcher.jobfolder.progress import TrainerPhase
from launcher.plan.plan import DataSpec, ModelSpec, RewardSpec
from launcher.train.errors import JobError
from launcher.train.scoring import guard_rewards
from launcher.validate.columns import missing_columns, needed_columns

DATA_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


def _from_file(path: Path, split: str):
    from datasets import load_dataset

    builder = DATA_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise JobError(f"data.name_or_path {path}: unknown file type (use one of {', '.join(DATA_BUILDERS)})")
    # a single file is one "train" split; a slice of it (train[:100]) is allowed
    return load_dataset(builder, data_files=str(path), split=split if split.startswith("train") else "train")


def _from_folder(path: Path, split: str, config_name: Any):
    from datasets import DatasetDict, load_dataset, load_from_disk

    if not any((path / f).exists() for f in ("dataset_dict.json", "state.json")):
        return load_dataset(str(path), config_name, split=split)
    obj = load_from_disk(str(path))
    if isinstance(obj, DatasetDict):
        if split not in obj:
            raise JobError(f"data.split={split!r} is not in {path} (splits: {', '.join(obj)})")
        obj = obj[split]
    return obj


def _offline(environ: Mapping[str, str]) -> bool:
    return any(environ.get(k, "").upper() in ("1", "ON", "YES", "TRUE") for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


def _cached_snapshot(data: DataSpec, environ: Mapping[str, str]) -> Path:
    """A hub dataset, offline: its snapshot in the hub cache, loaded as a folder (datasets itself, offline,
    reads only its own Arrow cache of an earlier load, never the hub cache's files)."""
    hub = Path(environ["HF_HUB_CACHE"]) if environ.get("HF_HUB_CACHE") else hub_cache.hub_dir(
        hub_cache.default_hf_home(environ))
    folder = hub_cache.snapshot(hub, "dataset", str(data.name_or_path), data.revision)
    if folder is None or hub_cache.missing("dataset", folder):
        raise JobError(f"dataset {data.name_or_path}@{data.revision or 'main'} is not in the Hugging Face cache {hub}, "
                       "and the job runs offline: launch with cluster.offline=true (it stages the dataset at "
                       "submission), or download it into that cache")
    return folder


def _load_one(data: DataSpec, source: Mapping[str, Any]):
    name = str(source["name_or_path"])
    split = source.get("split") or "train"
    path = local_path(name)
    if path.is_file():
        return _from_file(path, split)
    if path.is_dir():
        return _from_folder(path, split, source.get("config_name"))
    if looks_local(name):
        raise JobError(f"data.name_or_path {name} does not exist")
    if _offline(os.environ):
        spec = DataSpec(name_or_path=name, revision=source.get("revision"))
        return _from_folder(_cached_snapshot(spec, os.environ), split, source.get("config_name"))
    from datasets import load_dataset

    return load_dataset(name, source.get("config_name"), split=split, revision=source.get("revision"))


def _as_messages(prompt: Any, system: str) -> list:
    messages = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
    return [{"role": "system", "content": system}, *messages]


def prepare(ds, data: DataSpec, reward_funcs: list[str], name: str):
    """The dataset's columns mapped to GRPOTrainer's: "prompt" and the reward functions' arguments."""
    needed = needed_columns(data.prompt_column, data.prompt_template, data.reward_columns, reward_funcs)
    missing = missing_columns(ds.column_names, needed, name)
    if missing:
        raise JobError("; ".join(f"{key}: {message}" for key, message in missing))
    template, system, renames = data.prompt_template, data.system_prompt, dict(data.reward_columns)
    if template is None and system is None and data.prompt_column == "prompt" and not renames:
        return ds  # the dataset already is in TRL's shape

    def row(example: dict) -> dict:
        prompt = template.format(**example) if template else example[data.prompt_column]
        out = {"prompt": _as_messages(prompt, system) if system else prompt}
        out.update({argument: example[column] for argument, column in renames.items()})
        return out

    # the other columns stay: TRL hands every column to the reward functions as keyword arguments
    return ds.map(row, desc="columns")


def load_train_dataset(data: DataSpec, reward_funcs: Optional[list[str]] = None):
    """The dataset (or the mixture) the plan names, mapped to "prompt" + reward columns, cut to
    data.max_samples rows."""
    funcs = list(reward_funcs or [])
    parts = []
    for source in data.sources():
        ds = _load_one(data, source)
        parts.append(prepare(ds, data, funcs, str(source["name_or_path"])))
    if len(parts) == 1:
        ds = parts[0]
    else:
        ds = mix(parts, [float(s["weight"]) for s in data.sources()], data.seed)
    if data.max_samples is not None and data.max_samples < len(ds):
        ds = ds.select(range(int(data.max_samples)))
    return ds


def mix(parts: list, weights: list[float], seed: int):
    """The datasets interleaved, each row drawn from dataset i with probability weight_i / sum; only the
    columns all of them share are kept (interleaving needs one schema)."""
    from datasets import interleave_datasets

    shared = [c for c in parts[0].column_names if all(c in p.column_names for p in parts[1:])]
    parts = [p.select_columns(shared) for p in parts]
    try:
        parts = [p.cast(parts[0].features) for p in parts]
    except (ValueError, TypeError) as error:
        raise JobError(f"data.mixture: the datasets' columns {', '.join(shared)} have different types ({error})") from None
    total = sum(weights)
    return interleave_datasets(parts, probabilities=[w / total for w in weights], seed=seed,
                               stopping_strategy="first_exhausted")


def load_processing_class(model: ModelSpec):
    """The model's tokenizer (or processor), padding and truncating on the left as GRPO generates."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(
        str(local_path(model.name_or_path)), revision=model.revision,
        truncation_side="left", padding_side="left", trust_remote_code=bool(model.trust_remote_code))


def import_object(path: str) -> Any:
    """`package.module.attr[.attr...]` -> the object."""
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:i])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
                continue  # this prefix is not a module; try a shorter one
            raise
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            raise JobError(f"reward function {path!r}: {module_name} has no attribute {'.'.join(parts[i:])}") from None
        return obj
    raise JobError(f"reward function {path!r}: no importable module in that path")


def load_rewards(reward: RewardSpec, beat=None, phase: TrainerPhase = TrainerPhase.STEP) -> list[Callable]:
    """The reward functions the plan names; with the trainer's heartbeat (`beat`), each guarded: its calls
    announced in the heartbeat and bounded by reward.timeout_s (launcher.train.scoring.guard)."""
    funcs = []
    for path in reward.funcs:
        func = import_object(str(path))
        if not callable(func):
            raise JobError(f"reward function {path!r} is not callable")
        funcs.append(func)
    if not funcs:
        raise JobError("reward.funcs is empty")
    return funcs if beat is None else guard_rewards(funcs, reward.timeout_s, beat, phase)


def reward_name(func: Callable) -> str:
    return getattr(func, "__name__", repr(func))
