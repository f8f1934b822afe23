"""The server's compile caches on storage the nodes share, so that a requeued attempt and the next job of a
sweep start warm: vLLM's (VLLM_CACHE_ROOT: torch.compile artifacts, CUDA-graph-ready code), Triton's
(TRITON_CACHE_DIR) and TorchInductor's (TORCHINDUCTOR_CACHE_DIR).

They live under plan.cache_dir (cluster.cache_dir; default <job_root>/.cache, where the job folders are,
so on storage every node sees) in `compile/<model>-<key>/{vllm,triton,inductor}`: the key hashes the
model (name or path, revision), the versions of vllm, torch, triton and Python, the tensor- and
data-parallel sizes and the device. Jobs that agree on these share one folder; anything else gets its
own (vLLM keys its own entries by the whole configuration inside it as well). A variable the environment
already sets (cluster.env, the user's shell) is left alone. The Hugging Face cache is cluster.hf_home's
(docs/offline.md).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import re
from pathlib import Path
from typing import Mapping, Optional

from launcher.plan.plan import Plan

CACHE_VARS = {"vllm": "VLLM_CACHE_ROOT", "triton": "TRITON_CACHE_DIR", "inductor": "TORCHINDUCTOR_CACHE_DIR"}
KEYED_PACKAGES = ("vllm", "torch", "triton")


def installed_versions(packages=KEYED_PACKAGES) -> dict[str, Optional[str]]:
    """Each package's version as installed for this Python (metadata only: nothing is imported)."""
    found: dict[str, Optional[str]] = {}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def flag_value(argv: list[str], flag: str, default: str = "1") -> str:
    """The value after --flag_name or --flag-name (vLLM takes both spellings), or `default`."""
    names = {f"--{flag}", f"--{flag.replace('_', '-')}"}
    for i, token in enumerate(argv):
        if token in names and i + 1 < len(argv):
            return argv[i + 1]
        name, _, value = token.partition("=")
        if name in names and value:
            return value
    return default


def cache_key(plan: Plan, device: str, versions: Mapping[str, Optional[str]]) -> str:
    """`<model>-<12 hex>`: the same for jobs with the same model, versions, TP/DP and device."""
    execs = list(plan.component("server").execs)
    facts = {"model": str(plan.model.name_or_path), "revision": plan.model.revision, "device": device,
             "tensor_parallel": flag_value(execs, "tensor_parallel_size"),
             "data_parallel": flag_value(execs, "data_parallel_size"),
             "python": platform.python_version(), **{k: versions.get(k) for k in KEYED_PACKAGES}}
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:12]
    model = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(plan.model.name_or_path)).name or "model")[:48]
    return f"{model}-{digest}"


def cache_env(plan: Plan, device: str, env: Mapping[str, str],
              versions: Optional[Mapping[str, Optional[str]]] = None) -> dict[str, str]:
    """The cache variables to set for the server (those `env` does not set already); {} without a cache_dir."""
    root = getattr(plan, "cache_dir", None)
    if not root:
        return {}
    folder = Path(root) / "compile" / cache_key(plan, device, installed_versions() if versions is None else versions)
    return {var: str(folder / name) for name, var in CACHE_VARS.items() if not env.get(var)}
