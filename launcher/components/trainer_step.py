"""The trainer step (component 1, one task per node): decide the device and preflight vs training once,
fill in the rendezvous, exec the trainer.

The decisions, made here and nowhere after (launcher.train reads them):
- the device: plan.device, "auto" -> cuda when this node has GPUs (launcher.node.gpu_count), else cpu;
  passed on as LAUNCHER_DEVICE;
- preflight vs training: trainer.preflight=true -> `python -u -m launcher.train --preflight=WHY` on node 0
  only; colocate mode without CUDA -> exit with a message; otherwise training (node_run, a pure function),
  in server mode on CPU too (rank 0 syncs the weights to the server over gloo, launcher.sync, where GPUs
  use NCCL): the plan's `accelerate launch ... -m launcher.train` on every trainer node, on GPUs and on
  CPU alike (trainer.gpus_per_node processes per node; on CPU the same torchrun agent, gloo instead of
  NCCL, plus CPU_FLAGS), except a CPU world of one process, which runs plainly (`python -u -m
  launcher.train`).

For `accelerate launch` it fills the plan's placeholders on the node (machine rank; the rank-0 address
and a port free on node 0, which node 0 publishes in rendezvous.json for the others; TRL's packaged
accelerate configs) and exports VLLM_HOST_IP, this node's routable address (the vLLM workers dial the
trainer's rank 0 for the weight-sync group), on cluster.network_interface if set
(launcher.components.network). Before it execs, the node's hygiene runs, the local ranks share the CPUs
the step sees (OMP_NUM_THREADS and friends, launcher.components.cpus), the trainer's compile caches
(TRITON_CACHE_DIR, TORCHINDUCTOR_CACHE_DIR, and VLLM_CACHE_ROOT in colocate mode, where vLLM runs in the
trainer) go to the shared cache_dir (launcher.components.caches), and the node record is written.
The job folder reaches the trainer in LAUNCHER_JOB_DIR, as it reached this step.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from launcher.components.caches import cache_env
from launcher.components.common import become, decide_device, describe_node, node_setup, write_node_record
from launcher.components.cpus import thread_env
from launcher.components.network import network_env, publish_rendezvous, step_address, wait_rendezvous
from launcher.jobfolder.layout import load_plan
from launcher.jobfolder.tracking import job_tracking_env
from launcher.node import NoSuchInterface, free_port, gpu_count, slurm_hostnames
from launcher.plan import placeholders
from launcher.plan.plan import Plan

PLAN_PREFLIGHT = "trainer.preflight=true"
CPU_SERVER = ", generating through the server, weights synced to it over gloo (launcher.sync)"
CPU_INSIDE = " with generation inside the trainer"  # trainer.use_vllm=false
EXIT_UNUSABLE = 2  # as launcher.train's: the job cannot run as planned
# on CPU: no bf16 autocast (TRL's configs say bf16; GRPOConfig gets bf16=False). Not `--cpu`: it takes
# accelerate's simple launcher, one process (or mpirun), instead of torchrun's agent that the GPUs get
CPU_FLAGS = ("--mixed_precision", "no")
CPU_CONFIGS = ("multi_gpu", "single_gpu")  # ddp; DeepSpeed and FSDP configs need CUDA
STEP_STARTED = time.time()  # a rendezvous.json older than this step is an earlier start's


def trl_accelerate_configs() -> str:
    spec = importlib.util.find_spec("trl")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("trl is not installed in this environment (pip install 'launcher[train]')")
    return str(Path(list(spec.submodule_search_locations)[0]) / "accelerate_configs")


def on_one_machine() -> bool:
    return os.environ.get("LAUNCHER_BACKEND") == "local" or "SLURM_JOB_NODELIST" not in os.environ


def node_rank() -> int:
    """This node's rank among the trainer's nodes (0 on one machine)."""
    return 0 if on_one_machine() else int(os.environ.get("SLURM_NODEID", "0"))


def rendezvous(plan: Plan, address: str, attempt_dir: Optional[Path] = None) -> tuple[int, str, int]:
    """(machine rank, main process address, main process port) of this node; `address` is this node's own
    (launcher.components.network.step_address). Over several nodes, node 0 takes trainer.main_process_port
    or a port free on its address now, and publishes both in rendezvous.json for the other nodes (its
    address on cluster.network_interface, else its name's cluster address): no node guesses a port another
    job may hold. Without an attempt folder (run by hand) the port derives from the job id and the others
    resolve node 0's name."""
    if on_one_machine():
        return 0, "127.0.0.1", plan.policies.main_process_port or free_port("127.0.0.1")
    rank = node_rank()
    fixed = plan.policies.main_process_port
    several = plan.component("trainer").nodes > 1
    if attempt_dir is not None and several:
        if rank == 0:
            port = fixed or free_port(address)
            publish_rendezvous(attempt_dir, address, port)
            return 0, address, port
        main_ip, port = wait_rendezvous(attempt_dir, since=STEP_STARTED - 1)
        return rank, main_ip, port
    # every node must agree without talking: derive it from the job id
    port = fixed or 20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000
    if rank == 0:
        return 0, address, port
    hosts = slurm_hostnames(os.environ["SLURM_JOB_NODELIST"])  # this component's nodes in this step
    return rank, socket.gethostbyname(hosts[0]), port


def preflight_reason(plan: Plan, device: str) -> Optional[str]:
    """Why this trainer runs the preflight instead of training; None: it trains. Exits for colocate on CPU."""
    if plan.preflight:
        return PLAN_PREFLIGHT
    if device == "cpu" and plan.grpo.get("use_vllm", True) and plan.mode != "server":
        sys.exit("trainer: colocate mode needs a CUDA device (vLLM runs inside the trainer)")
    return None  # CUDA; CPU in server mode (weights synced over gloo); CPU generating inside the trainer


def entry_index(argv: list[str]) -> int:
    """Where the trainer module starts in the plan's command: the first `-m launcher.train...` (a script's args follow)."""
    return next(i for i in range(len(argv) - 1) if argv[i] == "-m" and argv[i + 1].startswith("launcher.train"))


def train_argv(plan: Plan, address: str, attempt_dir: Optional[Path] = None, device: str = "cuda") -> list[str]:
    """The plan's `accelerate launch ... -m launcher.train` with this node's rendezvous filled in; on CPU
    with the CPU flags before the script (CPU_FLAGS)."""
    rank, main_ip, main_port = rendezvous(plan, address, attempt_dir)
    argv = placeholders.fill(list(plan.component("trainer").execs), {
        placeholders.MACHINE_RANK: rank, placeholders.MAIN_PROCESS_IP: main_ip,
        placeholders.MAIN_PROCESS_PORT: main_port, placeholders.TRL_ACCELERATE_CONFIGS: trl_accelerate_configs()})
    if device == "cpu":
        script = entry_index(argv)  # accelerate's flags end at `-m launcher.train[.user_script ...]`
        argv[script:script] = list(CPU_FLAGS)
    return argv


@dataclass(frozen=True)
class NodeRun:
    """What this trainer node runs: PREFLIGHT, PLAIN (one CPU process), ACCELERATE (the plan's command) or
    IDLE, and the line it says first (None: nothing)."""
    what: str
    message: Optional[str] = None


PREFLIGHT, PLAIN, ACCELERATE, IDLE = "preflight", "plain", "accelerate", "idle"


def node_run(plan: Plan, device: str, rank: int, reason: Optional[str]) -> NodeRun:
    """The per-node decision, pure: a preflight on node 0 only; on CPU one plain process when the world is
    one process, else the same `accelerate launch` as on GPUs (gloo instead of NCCL) on every node."""
    if reason:
        return NodeRun(PREFLIGHT) if rank == 0 else NodeRun(IDLE, f"trainer node {rank}: preflight runs on node 0 only")
    if device != "cpu":
        return NodeRun(ACCELERATE)
    trainer = plan.component("trainer")
    where = "no CUDA device here" if plan.device == "auto" else "device=cpu"
    processes = trainer.nodes * trainer.gpus_per_node
    if processes == 1:
        generation = CPU_SERVER if plan.grpo.get("use_vllm", True) else CPU_INSIDE
        return NodeRun(PLAIN, f"trainer: {where}, training on CPU{generation}")
    config = next((Path(a).stem for a in trainer.execs if str(a).endswith(".yaml")), "")
    if config not in CPU_CONFIGS:
        sys.exit(f"trainer: {where}, and trainer.strategy ({config}) needs CUDA; on CPU use trainer.strategy=ddp")
    return NodeRun(ACCELERATE, f"trainer: {where}, training on CPU: {processes} processes "
                               f"({trainer.gpus_per_node} per node on {trainer.nodes} node(s)), gloo")


def local_ranks(plan: Plan, run: NodeRun) -> int:
    """Processes this node runs: trainer.gpus_per_node under accelerate (GPUs, or CPU processes), else one."""
    return plan.component("trainer").gpus_per_node if run.what == ACCELERATE else 1


def main() -> None:
    job_dir = Path(os.environ["LAUNCHER_JOB_DIR"])
    attempt_dir = Path(os.environ["LAUNCHER_ATTEMPT_DIR"]) if os.environ.get("LAUNCHER_ATTEMPT_DIR") else None
    plan = load_plan(job_dir)
    rank = node_rank()
    env = dict(os.environ)
    record = node_setup(plan, "trainer", env, job_dir)
    try:
        address = step_address(plan)
    except NoSuchInterface as error:
        print(f"trainer: {error}", file=sys.stderr, flush=True)
        sys.exit(EXIT_UNUSABLE)
    env["VLLM_HOST_IP"] = address
    record.update(address=address, network=network_env(plan, address, env))
    if plan.policies.group_port:
        env["LAUNCHER_GROUP_PORT"] = str(plan.policies.group_port)
    device = decide_device(plan, env)
    env.update(job_tracking_env(plan, job_dir, env))  # every attempt continues the job's one W&B / TensorBoard run
    caches = cache_env(plan, device, env, component="trainer")  # its own compile caches (and vLLM's in colocate)
    env.update(caches)
    record.update(caches=caches)
    reason = preflight_reason(plan, device)
    run = node_run(plan, device, rank, reason)
    if run.message:
        print(run.message, flush=True)
    argv: Optional[list[str]] = None
    if run.what == PREFLIGHT:
        argv = [plan.python, "-u", "-m", "launcher.train", f"--preflight={reason}"]
    elif run.what == PLAIN:
        execs = list(plan.component("trainer").execs)
        argv = [plan.python, "-u", *execs[entry_index(execs):]]  # the trainer module (and a user script's args)
    elif run.what == ACCELERATE:
        if device == "cuda" and plan.device == "cuda" and gpu_count() == 0:
            print("trainer: device=cuda but this node shows no NVIDIA GPU (CUDA_VISIBLE_DEVICES="
                  f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')})", file=sys.stderr, flush=True)
            sys.exit(EXIT_UNUSABLE)
        argv = train_argv(plan, address, attempt_dir, device)
    ranks = local_ranks(plan, run)
    record.update(local_ranks=ranks if argv else 0, threads=thread_env(record["cpus_seen"], ranks, env))
    print(f"trainer: {describe_node(record)}, {ranks} local rank(s) x OMP_NUM_THREADS={env['OMP_NUM_THREADS']}",
          file=sys.stderr, flush=True)
    if attempt_dir is not None:
        write_node_record(attempt_dir, record)
    if argv is None:
        return
    become("trainer", argv, env)


if __name__ == "__main__":
    main()
