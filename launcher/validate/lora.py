"""Rules on model.lora (LoRA through peft), before anything is queued: a rank, alpha and dropout peft can
use, target modules as a list of names or "all-linear", and, where the weights can be read here (a local
model folder, or the hub model's snapshot in cluster.hf_home's cache), every named target module present
in the model. The weight names come from the safetensors headers (JSON; no torch). A model whose weights
cannot be read here is checked by the trainer when it loads the model (launcher.train.lora), with the same
matching (`unknown_targets`).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, Iterable, Optional

from launcher import hub_cache
from launcher.config.schema import LaunchConfig
from launcher.paths import looks_local
from launcher.validate.problems import Facts, Problem

ALL_LINEAR = "all-linear"  # peft's shorthand: every linear layer but the output head
TARGETS_KEY = "model.lora.target_modules"
TARGETS_FORM = f"a list of module names ([q_proj, v_proj]) or {ALL_LINEAR}"
INDEX = "model.safetensors.index.json"


def unknown_targets(module_names: Iterable[str], targets: list[str]) -> list[str]:
    """The targets no module matches, as peft matches a list: the module's full name, or its last parts."""
    names = list(module_names)
    return [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]


def _header_names(path: Path) -> list[str]:
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        return [k for k in json.loads(f.read(size)) if k != "__metadata__"]


def weight_module_names(folder: Path) -> Optional[list[str]]:
    """The modules holding the weights of a safetensors model folder (None: no safetensors readable here)."""
    try:
        if (folder / INDEX).is_file():
            params = list(json.loads((folder / INDEX).read_text())["weight_map"])
        else:
            files = sorted(folder.glob("*.safetensors"))
            if not files:
                return None
            params = [n for p in files for n in _header_names(p)]
    except (OSError, ValueError, KeyError, struct.error):
        return None
    return sorted({p.rpartition(".")[0] for p in params})


def model_folder(cfg: LaunchConfig) -> Optional[Path]:
    name = cfg.model.name_or_path
    local = Path(os.path.expanduser(name))
    if local.is_dir():
        return local
    if cfg.cluster.hf_home and not looks_local(name):
        return hub_cache.snapshot(hub_cache.hub_dir(cfg.cluster.hf_home), "model", name, cfg.model.revision)
    return None


def _number_problems(lora: Any) -> list[Problem]:
    problems = []
    rank, alpha, dropout = lora.rank, lora.alpha, lora.dropout
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        problems.append(Problem(("model.lora.rank",), f"must be a whole number > 0 (the LoRA rank), not {rank!r}"))
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0):
        problems.append(Problem(("model.lora.alpha",), f"must be > 0 (null = 2 x rank), not {alpha!r}"))
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        problems.append(Problem(("model.lora.dropout",), f"must be >= 0 and < 1, not {dropout!r}"))
    return problems


def targets_problem(targets: Any) -> Optional[str]:
    """Why model.lora.target_modules cannot be peft's target_modules (None: it can)."""
    if targets is None or targets == ALL_LINEAR:
        return None
    if isinstance(targets, str):
        return f"must be {TARGETS_FORM}, not the string {targets!r}"
    if not isinstance(targets, (list, tuple)) or not targets:
        return f"must be {TARGETS_FORM}, not {targets!r}"
    bad = [t for t in targets if not isinstance(t, str) or not t.strip() or t == ALL_LINEAR]
    if bad:
        return f"must be {TARGETS_FORM}: {bad!r} are not module names ({ALL_LINEAR} stands alone, not in a list)"
    return None


def check_lora(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    lora = cfg.model.lora
    if lora.rank is None:
        set_keys = [f"model.lora.{k}" for k in ("alpha", "target_modules", "modules_to_save")
                    if getattr(lora, k) is not None]
        return [Problem(tuple(set_keys), "is set but model.lora.rank is not: LoRA is on only with a rank "
                        "(model.lora.rank=16)")] if set_keys else []
    problems = _number_problems(lora)
    why = targets_problem(lora.target_modules)
    if why:
        return problems + [Problem((TARGETS_KEY,), why)]
    saved = lora.modules_to_save
    if saved is not None and (not saved or any(not isinstance(m, str) or not m.strip() for m in saved)):
        problems.append(Problem(("model.lora.modules_to_save",), f"must be a list of module names, not {saved!r}"))
    if isinstance(lora.target_modules, (list, tuple)):
        folder = model_folder(cfg)
        names = weight_module_names(folder) if folder is not None else None
        missing = unknown_targets(names, list(lora.target_modules)) if names else []
        if missing:
            leaves = sorted({n.rpartition(".")[2] for n in names if n})
            problems.append(Problem((TARGETS_KEY,), f"{', '.join(missing)}: no such module in "
                                    f"{cfg.model.name_or_path} (its weights are in modules named "
                                    f"{', '.join(leaves)}; or use {ALL_LINEAR})"))
    return problems
