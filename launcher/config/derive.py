"""Values that follow from other keys of the typed config: server.gpus_per_node when null (TP x DP /
nodes), cluster.hf_home when offline, the trainer's process count, and the local backend's GPU split. Validation and the plan read
them here, so both agree.
"""

from __future__ import annotations

import os

from launcher.config.schema import LaunchConfig, Mode
from launcher.hub_cache import default_hf_home


def derive(cfg: LaunchConfig) -> LaunchConfig:
    """Fill keys whose null means "follow the others": server.gpus_per_node = TP x DP / nodes (rounded up,
    so that a TP x DP that does not split over the nodes is reported by validation, naming the keys), and,
    offline, cluster.hf_home = the cache huggingface_hub would use here ($HF_HOME, else ~/.cache/huggingface)."""
    if cfg.cluster.offline and not cfg.cluster.hf_home:
        cfg.cluster.hf_home = default_hf_home(os.environ)
    server = cfg.server
    if server.gpus_per_node is None:
        parts = (server.tensor_parallel_size, server.data_parallel_size, server.nodes)
        if all(isinstance(v, int) and v > 0 for v in parts):
            tp, dp, nodes = parts
            server.gpus_per_node = -(-tp * dp // nodes)
        else:
            server.gpus_per_node = 1  # the bad count itself is what validation reports
    return cfg


def trainer_processes(cfg: LaunchConfig) -> int:
    """Training processes of the job: one per trainer GPU."""
    return cfg.trainer.nodes * cfg.trainer.gpus_per_node


def local_gpu_sets(cfg: LaunchConfig) -> tuple[list[int], list[int]]:
    """(server GPUs, trainer GPUs) of the local backend: the listed ones, else the trainer on the first
    GPUs and the server on the next ones (no server GPUs in colocate mode)."""
    s, t = cfg.server, cfg.trainer
    trainer_n = t.nodes * t.gpus_per_node
    server_n = s.nodes * (s.gpus_per_node or 0) if cfg.mode == Mode.server else 0
    trainer = list(t.gpus) if t.gpus is not None else list(range(trainer_n))
    if s.gpus is not None:
        server = list(s.gpus)
    else:
        start = max(trainer, default=-1) + 1
        server = list(range(start, start + server_n))
    return server, trainer
