"""The compile caches on storage the nodes share, so that a requeued attempt and the next job of a sweep
start warm: vLLM's (VLLM_CACHE_ROOT: torch.compile artifacts, CUDA-graph-ready code), Triton's
(TRITON_CACHE_DIR) and TorchInductor's (TORCHINDUCTOR_CACHE_DIR).

They live under plan.cache_dir (cluster.cache_dir; default <job_root>/.cache, where the job folders are,
so on storage every node sees; bound into a component's container at its own path, plan/containers.py),
one folder per component, `compile/<model>-<key>/{vllm,triton,inductor}` for the server and
`compile/<model>-trainer-<key>/...` for the trainer:
- the server's key hashes the model (name or path, revision), the versions of vllm, torch, triton and
  Python, vLLM's tensor- and data-parallel sizes (its command's flags) and the device;
- the trainer's hashes the same model, versions and device plus its layout (nodes, processes per node,
  accelerate config) and, when vLLM runs inside it (colocate), that engine's TP (grpo.vllm_tensor_parallel_size)
  and how many engines the world holds. The trainer gets TRITON_CACHE_DIR and TORCHINDUCTOR_CACHE_DIR
  (torch.compile, DeepSpeed/FSDP kernels) and, in colocate mode, VLLM_CACHE_ROOT too.
Jobs that agree on these share one folder; anything else gets its own (vLLM keys its own entries by the whole
configuration inside it as well). A variable the environment already sets (cluster.env, server/trainer.env,
the user's shell) is left alone. The Hugging Face cache is cluster.hf_home's (docs/offline.md).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import re
from pathlib import Path
from typing import Any, Mapping, Optional

from launcher.plan.plan import Plan

CACHE_VARS = {"vllm": "VLLM_CACHE_ROOT", "triton": "TRITON_CACHE_DIR", "inductor": "TORCHINDUCTOR_CACHE_DIR"}
KEYED_PACKAGES = ("vllm", "torch", "triton")
COMPONENTS = ("server", "trainer")


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


def runs_vllm(plan: Plan, component: str) -> bool:
    """The server always; the trainer when vLLM runs inside it (colocate mode with use_vllm)."""
    if component == "server":
        return True
    return plan.mode == "colocate" and bool(plan.grpo.get("use_vllm", True))


def _trainer_facts(plan: Plan) -> dict[str, Any]:
    trainer = plan.component("trainer")
    processes = trainer.nodes * max(trainer.gpus_per_node, 1)
    config = next((Path(str(a)).stem for a in trainer.execs if str(a).endswith(".yaml")), "plain")
    facts: dict[str, Any] = {"component": "trainer", "nodes": trainer.nodes,
                             "processes_per_node": max(trainer.gpus_per_node, 1), "accelerate_config": config}
    if runs_vllm(plan, "trainer"):  # TRL's colocate: one engine of vllm_tensor_parallel_size ranks per group
        tp = int(plan.grpo.get("vllm_tensor_parallel_size") or 1)
        facts.update(tensor_parallel=str(tp), data_parallel=str(max(processes // tp, 1)))
    return facts


def cache_facts(plan: Plan, device: str, versions: Mapping[str, Optional[str]],
                component: str = "server") -> dict[str, Any]:
    """What keys one component's caches (the module's docstring says why each)."""
    facts: dict[str, Any] = {"model": str(plan.model.name_or_path), "revision": plan.model.revision,
                             "device": device, "python": platform.python_version(),
                             **{k: versions.get(k) for k in KEYED_PACKAGES}}
    if component == "server":
        execs = list(plan.component("server").execs)
        facts.update(tensor_parallel=flag_value(execs, "tensor_parallel_size"),
                     data_parallel=flag_value(execs, "data_parallel_size"))
    elif component == "trainer":
        facts.update(_trainer_facts(plan))
    else:
        raise ValueError(f"no caches for component {component!r} (one of {', '.join(COMPONENTS)})")
    return facts


def cache_key(plan: Plan, device: str, versions: Mapping[str, Optional[str]], component: str = "server") -> str:
    """`<model>-<12 hex>` (the trainer's `<model>-trainer-<12 hex>`): the same for jobs that agree on
    cache_facts."""
    facts = cache_facts(plan, device, versions, component)
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:12]
    model = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(plan.model.name_or_path)).name or "model")[:48]
    return f"{model}-{digest}" if component == "server" else f"{model}-{component}-{digest}"


def cache_env(plan: Plan, device: str, env: Mapping[str, str],
              versions: Optional[Mapping[str, Optional[str]]] = None, component: str = "server") -> dict[str, str]:
    """The cache variables to set for `component` (those `env` does not set already); {} without a
    cache_dir. The trainer gets VLLM_CACHE_ROOT only when vLLM runs inside it."""
    root = getattr(plan, "cache_dir", None)
    if not root:
        return {}
    found = installed_versions() if versions is None else versions
    folder = Path(root) / "compile" / cache_key(plan, device, found, component)
    names = [n for n in CACHE_VARS if n != "vllm" or runs_vllm(plan, component)]
    return {CACHE_VARS[n]: str(folder / n) for n in names if not env.get(CACHE_VARS[n])}
