"""The vLLM CPU server's size before queueing (device=cpu): each of its TP x DP workers counts as one of
the server's GPUs (server.gpus_per_node = TP x DP), so the per-GPU defaults can ask a node for more CPUs
or memory than it has, which sbatch would refuse; and fewer CPUs than workers make them share CPUs
(the binding launcher.components.cpus writes on the node lets vLLM run that, slowly).
"""

from __future__ import annotations

from launcher.config.schema import Backend, Device, LaunchConfig, Mode
from launcher.validate.problems import Facts, Problem
from launcher.validate.resources import component_request, node_facts

LAYOUT_KEYS = ("server.tensor_parallel_size", "server.data_parallel_size")


def check_cpu_server(cfg: LaunchConfig, facts: Facts) -> list[Problem]:
    s = cfg.server
    if cfg.device != Device.cpu or cfg.mode != Mode.server or cfg.cluster.backend != Backend.slurm:
        return []
    tp, dp = s.tensor_parallel_size, s.data_parallel_size
    if not all(isinstance(v, int) and v >= 1 for v in (tp, dp, s.gpus_per_node)):
        return []  # reported by check_counts
    workers = tp * dp
    request = component_request(cfg, "server", facts)
    partition, node = node_facts(cfg, facts)
    node_cpus, node_mem = node.get("cpus_per_node"), node.get("mem_mb_per_node")
    layout = f"TP x DP = {tp} x {dp} = {workers} vLLM CPU worker(s), each counted as one of the server's GPUs"
    problems = []
    if s.cpus_per_gpu is None and request.cpus and node_cpus and request.cpus > node_cpus:
        problems.append(Problem(
            LAYOUT_KEYS + ("server.cpus_per_gpu",),
            f"{layout}, ask for {request.cpus} CPUs per node ({request.cpus_why}), but nodes of partition "
            f"{partition!r} have {node_cpus}: set server.cpus_per_gpu={max(1, node_cpus // workers)} "
            "(CPUs per worker)"))
    if s.mem_per_gpu is None and request.mem_mb and node_mem and request.mem_mb > node_mem:
        problems.append(Problem(
            LAYOUT_KEYS + ("server.mem_per_gpu",),
            f"{layout}, ask for {request.mem_mb} MB per node ({request.mem_why}), but nodes of partition "
            f"{partition!r} have {node_mem} MB: set server.mem_per_gpu={max(1, node_mem // workers)}M "
            "(memory per worker)"))
    if request.cpus is not None and request.cpus < workers:
        problems.append(Problem(
            LAYOUT_KEYS + ("server.cpus_per_gpu",),
            f"{workers} vLLM CPU workers on {request.cpus} CPU(s) ({request.cpus_why}): they will share CPUs "
            "(vLLM runs them, slower); give the server at least one CPU per worker", severity="warning"))
    return problems
