"""Rules on the topology: counts, the server's TP x DP against its GPUs and the model's heads, data
parallelism on dense models, and the local backend's GPUs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from launcher import hub_cache
from launcher.config.derive import local_gpu_sets
from launcher.config.schema import Backend, Device, LaunchConfig, Mode, Strategy
from launcher.paths import looks_local
from launcher.validate.problems import Facts, Problem


def _positive_int(cfg: LaunchConfig, section: str, key: str) -> list[Problem]:
    value = getattr(getattr(cfg, section), key)
    if not isinstance(value, int) or value < 1:
        return [Problem((f"{section}.{key}",), f"must be a positive integer, got {value!r}")]
    return []


def check_counts(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    problems = []
    keys = [("trainer", "nodes"), ("trainer", "gpus_per_node")]
    if cfg.mode == Mode.server:
        keys += [("server", "nodes"), ("server", "gpus_per_node"),
                 ("server", "tensor_parallel_size"), ("server", "data_parallel_size")]
    for section, key in keys:
        problems += _positive_int(cfg, section, key)
    return problems


def check_server_topology(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    if cfg.mode != Mode.server:
        return []
    s = cfg.server
    tp, dp, nodes, gpn = s.tensor_parallel_size, s.data_parallel_size, s.nodes, s.gpus_per_node
    if min(tp, dp, nodes, gpn) < 1:
        return []  # reported by check_counts
    problems = []
    if tp * dp != nodes * gpn:
        problems.append(Problem(
            ("server.tensor_parallel_size", "server.data_parallel_size", "server.nodes", "server.gpus_per_node"),
            f"TP x DP = {tp} x {dp} = {tp * dp} must equal the server's GPUs, "
            f"nodes x gpus_per_node = {nodes} x {gpn} = {nodes * gpn}"))
    elif nodes > 1:
        problems.append(Problem(("server.nodes",), multi_node_server_message(tp, dp, nodes)))
    return problems


def multi_node_server_message(tp: int, dp: int, nodes: int) -> str:
    """Why a server over several nodes is refused, and what to do instead (docs/cluster-cookbook.md)."""
    return (f"a server over {nodes} nodes (TP x DP = {tp} x {dp}) is not supported: the launcher starts vLLM "
            "on one node and nothing in the job starts a Ray cluster or vLLM's --nnodes/--headless workers "
            "(server.distributed_executor_backend=ray would find no Ray cluster). Set server.nodes=1 with "
            f"server.gpus_per_node = TP x DP = {tp * dp} on a node that has that many GPUs; for a model too big "
            "for one node's GPUs, use a quantized or smaller model (docs/cluster-cookbook.md, multi-node servers)")


def model_config(cfg: LaunchConfig) -> Optional[tuple[dict, str]]:
    """The model's config.json and where it was read: a local model folder, else the snapshot of the hub id
    at model.revision in cluster.hf_home's cache (staged there, or there already); None when neither is."""
    name = cfg.model.name_or_path
    try:
        return json.loads((Path(os.path.expanduser(name)) / "config.json").read_text()), f"{name}/config.json"
    except (OSError, ValueError):
        pass
    if cfg.cluster.hf_home and not looks_local(name):
        cached = hub_cache.model_config(hub_cache.hub_dir(cfg.cluster.hf_home), name, cfg.model.revision)
        if cached is not None:
            return cached[0], str(cached[1])
    return None


def read_model_config(cfg: LaunchConfig) -> Optional[dict]:
    found = model_config(cfg)
    return found[0] if found else None


def _text_config(model_cfg: dict) -> dict:
    # multimodal configs nest the language model's numbers
    return model_cfg.get("text_config") or model_cfg


def check_tensor_parallel_heads(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    if cfg.mode != Mode.server:
        return []
    found = model_config(cfg)
    tp = cfg.server.tensor_parallel_size
    if found is None or not isinstance(tp, int) or tp < 1:
        return []
    model_cfg, source = found
    text = _text_config(model_cfg)
    heads = text.get("num_attention_heads")
    kv_heads = text.get("num_key_value_heads", heads)
    problems = []
    if isinstance(heads, int) and heads % tp:
        problems.append(Problem(
            ("server.tensor_parallel_size",),
            f"TP = {tp} must divide the model's attention heads ({heads}, from {source})"))
    elif isinstance(kv_heads, int) and kv_heads % tp and tp % kv_heads:
        problems.append(Problem(
            ("server.tensor_parallel_size",),
            f"TP = {tp} and the model's {kv_heads} key/value heads must divide one another"))
    return problems


def check_data_parallel_dense(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    dp = cfg.server.data_parallel_size
    if cfg.mode != Mode.server or dp in (None, 1):
        return []
    if not isinstance(dp, int) or dp < 1:
        return []
    model_cfg = read_model_config(cfg)
    moe_keys = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
    if model_cfg is not None and any(_text_config(model_cfg).get(k) for k in moe_keys):
        return []
    which = "a dense model" if model_cfg is not None else "a model whose config.json is not readable here"
    return [Problem(
        ("server.data_parallel_size",),
        f"DP = {dp} on {which}: TRL documents data parallelism > 1 as "
        "unsupported for dense models; prefer tensor_parallel_size, or check that vLLM accepts it",
        severity="warning")]


def check_local_gpus(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    if cfg.cluster.backend != Backend.local:
        return []
    s, t = cfg.server, cfg.trainer
    server_mode = cfg.mode == Mode.server
    problems = []
    if t.nodes != 1 or (server_mode and s.nodes != 1):
        problems.append(Problem(("server.nodes", "trainer.nodes"), "the local backend runs on one machine: set both to 1"))
        return problems
    server, trainer = local_gpu_sets(cfg)
    if server_mode and len(server) != s.gpus_per_node:
        problems.append(Problem(("server.gpus", "server.gpus_per_node"),
                                f"server.gpus lists {len(server)} GPUs but server.gpus_per_node is {s.gpus_per_node}"))
    if len(trainer) != t.gpus_per_node:
        problems.append(Problem(("trainer.gpus", "trainer.gpus_per_node"),
                                f"trainer.gpus lists {len(trainer)} GPUs but trainer.gpus_per_node is {t.gpus_per_node}"))
    overlap = sorted(set(server) & set(trainer)) if server_mode else []
    if overlap:
        problems.append(Problem(("server.gpus", "trainer.gpus"),
                                f"server and trainer share GPU(s) {overlap}: NCCL weight sync refuses two ranks "
                                "on one GPU ('Duplicate GPU detected'); give them disjoint GPUs, or use mode=colocate"))
    if facts.local_gpus:  # 0/None = no CUDA here: the CPU fallback runs instead
        missing = sorted(g for g in set(server) | set(trainer) if g >= facts.local_gpus or g < 0)
        if missing:
            problems.append(Problem(("server.gpus", "trainer.gpus", "server.gpus_per_node", "trainer.gpus_per_node"),
                                    f"GPU(s) {missing} do not exist: this machine has {facts.local_gpus} "
                                    f"(ids 0..{facts.local_gpus - 1})"))
    return problems


EXECUTOR_BACKENDS = ("mp", "uni")  # one node's executors (`ray` needs a Ray cluster nothing here starts)


def check_server_settings(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    """vLLM's executor and its share of GPU memory."""
    if cfg.mode != Mode.server:
        return []
    problems = []
    backend = cfg.server.distributed_executor_backend
    if backend == "ray":
        problems.append(Problem(("server.distributed_executor_backend",),
                                "'ray' needs a Ray cluster, and nothing in the job starts one; leave it null (vLLM's "
                                "multiprocessing executor runs TP x DP on the server's node) or set mp"))
    elif backend is not None and backend not in EXECUTOR_BACKENDS:
        problems.append(Problem(("server.distributed_executor_backend",),
                                f"{backend!r} is not one of the executors the server can use "
                                f"({', '.join(EXECUTOR_BACKENDS)}) or null"))
    util = cfg.server.gpu_memory_utilization
    if not 0 < util <= 1:
        problems.append(Problem(("server.gpu_memory_utilization",), f"must be in (0, 1], got {util}"))
    return problems


def check_cpu_trainer(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    """device=cpu: several trainer processes train under accelerate's torchrun agent with gloo (DDP only;
    trainer.gpus_per_node is the processes per node there); DeepSpeed and FSDP need CUDA."""
    t = cfg.trainer
    if cfg.device != Device.cpu or t.strategy == Strategy.ddp:
        return []
    if isinstance(t.nodes, int) and isinstance(t.gpus_per_node, int) and t.nodes * t.gpus_per_node == 1:
        return []  # one plain process: the strategy plays no part
    return [Problem(("trainer.strategy", "device"),
                    f"trainer.strategy={Strategy(t.strategy).value} needs CUDA; with device=cpu the trainer's "
                    f"{t.nodes} x {t.gpus_per_node} processes train with trainer.strategy=ddp (gloo)")]
