"""The trainer step (component 1, one task per node): fill in the rendezvous, exec the trainer.

Fills the plan's placeholders on the node: machine rank, rank-0 address and port, TRL's packaged
accelerate configs, and exports VLLM_HOST_IP (this node's routable address: the vLLM workers dial
the trainer's rank 0 for the NCCL weight-sync group). Without CUDA it runs preflight instead,
saying why.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from launcher.jobfolder.layout import load_plan
from launcher.node import free_port, has_cuda, node_address, slurm_hostnames
from launcher.components.serve import ignore_stray_usr2

NO_CUDA = "trainer: no CUDA device here, running preflight instead of training (weight sync needs CUDA)"


def trl_accelerate_configs() -> str:
    spec = importlib.util.find_spec("trl")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("trl is not installed in this environment (pip install 'launcher[train]')")
    return str(Path(list(spec.submodule_search_locations)[0]) / "accelerate_configs")


def rendezvous(plan) -> tuple[int, str, int]:
    """(machine rank, main process address, main process port) of this node."""
    if os.environ.get("LAUNCHER_BACKEND") == "local" or "SLURM_JOB_NODELIST" not in os.environ:
        return 0, "127.0.0.1", plan.policies.main_process_port or free_port("127.0.0.1")
    hosts = slurm_hostnames(os.environ["SLURM_JOB_NODELIST"])  # this component's nodes in this step
    rank = int(os.environ.get("SLURM_NODEID", "0"))
    import socket

    main_ip = node_address() if rank == 0 else socket.gethostbyname(hosts[0])
    port = plan.policies.main_process_port
    if port is None:
        # every node must agree without talking: derive it from the job id
        port = 20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000
    return rank, main_ip, port


def main() -> None:
    job_dir = Path(os.environ["LAUNCHER_JOB_DIR"])
    plan = load_plan(job_dir)
    component = plan.component("trainer")
    rank, main_ip, main_port = rendezvous(plan)
    env = dict(os.environ)
    env["VLLM_HOST_IP"] = node_address()
    if plan.policies.group_port:
        env["LAUNCHER_GROUP_PORT"] = str(plan.policies.group_port)
    cuda = plan.device == "cuda" or (plan.device == "auto" and has_cuda())
    generates_in_trainer = not plan.grpo.get("use_vllm", True)
    if plan.preflight or (not cuda and not generates_in_trainer):
        if not plan.preflight:
            if plan.mode != "server":
                sys.exit("trainer: colocate mode needs a CUDA device (vLLM runs inside the trainer)")
            print(NO_CUDA, flush=True)
        if rank > 0:
            print(f"trainer node {rank}: preflight runs on node 0 only", flush=True)
            return
        argv = [plan.python, "-u", "-m", "launcher.train", str(job_dir), "--preflight"]
    elif not cuda:
        # trainer.use_vllm=false on CPU (tests, debugging): one plain process, no accelerate
        if rank > 0:
            print(f"trainer node {rank}: CPU training runs on node 0 only", flush=True)
            return
        print("trainer: no CUDA device here, training on CPU with generation inside the trainer", flush=True)
        argv = [plan.python, "-u", "-m", "launcher.train", str(job_dir)]
    else:
        values = {"{job_dir}": str(job_dir), "{machine_rank}": str(rank), "{main_process_ip}": main_ip,
                  "{main_process_port}": str(main_port), "{trl_accelerate_configs}": trl_accelerate_configs()}
        argv = []
        for arg in component.execs:
            for key, value in values.items():
                arg = arg.replace(key, value)
            argv.append(arg)
    print(f"trainer: exec {' '.join(argv)}", flush=True)
    ignore_stray_usr2()
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    main()
