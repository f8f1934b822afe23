"""Which address a component's node uses, and the variables that follow it.

Without cluster.network_interface: the node name's cluster address (launcher.node.node_address), as
before. With it (ib0, hsn0, ...): that interface's IPv4 address on every node; the server binds and
publishes it; VLLM_HOST_IP is it (vLLM's and the weight-sync group's sockets), NCCL_SOCKET_IFNAME and
GLOO_SOCKET_IFNAME name the interface (unless set), and accelerate's main process address is trainer node
0's address on it, which node 0 publishes in rendezvous.json for the other trainer nodes (a host name
resolves to the management address, not the fabric's). A name the node lacks ends the step at once,
naming the interfaces it has (launcher.node.NoSuchInterface).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from launcher.jobfolder.jsonio import read_json, write_json_atomic
from launcher.jobfolder.names import RENDEZVOUS
from launcher.node import interface_address, node_address
from launcher.plan.plan import Plan

IFNAME_VARS = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME")
RENDEZVOUS_WAIT_S = 300.0  # how long trainer nodes > 0 wait for node 0's address (node 0 starts as they do)


def step_address(plan: Plan) -> str:
    """This node's address for the job: on cluster.network_interface if set, else the node's cluster address."""
    interface = plan.policies.network_interface
    return interface_address(interface) if interface else node_address()


def network_env(plan: Plan, address: str, env: dict[str, str]) -> dict[str, str]:
    """The variables that follow cluster.network_interface (none without it); {variable: value} as set."""
    interface = plan.policies.network_interface
    if not interface:
        return {}
    env["VLLM_HOST_IP"] = address
    for var in IFNAME_VARS:
        env.setdefault(var, interface)
    return {var: env[var] for var in ("VLLM_HOST_IP",) + IFNAME_VARS}


def publish_rendezvous(attempt_dir: Path, address: str, port: int) -> None:
    write_json_atomic(Path(attempt_dir) / RENDEZVOUS, {"address": address, "port": port})


def wait_rendezvous(attempt_dir: Path, timeout_s: float = RENDEZVOUS_WAIT_S,
                    since: Optional[float] = None) -> tuple[str, int]:
    """Trainer node 0's (address, port) once it published them (written at or after `since`)."""
    path = Path(attempt_dir) / RENDEZVOUS
    deadline = time.monotonic() + timeout_s
    while True:
        data = read_json(path)
        fresh = since is None or (path.exists() and path.stat().st_mtime >= since)
        if isinstance(data, dict) and fresh and data.get("address") and data.get("port"):
            return str(data["address"]), int(data["port"])
        if time.monotonic() > deadline:
            raise TimeoutError(f"trainer node 0 did not publish its address in {path} within {timeout_s:g} s")
        time.sleep(0.5)
