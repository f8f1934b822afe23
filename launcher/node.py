"""Facts about the node a component runs on: its cluster address (or a chosen interface's), free ports, the
CPUs it may use, its GPUs and the device the job uses on it (decided once, by the component's step wrapper,
and passed on in LAUNCHER_DEVICE). Stdlib only."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
from pathlib import Path


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return True


def node_address() -> str:
    """The address other nodes of the job reach this node at.

    LAUNCHER_NODE_ADDRESS wins; the local backend uses loopback; on Slurm, the node name's address
    unless it is a loopback alias (Debian maps the hostname to 127.0.1.1), else the source address
    of the route towards the node that launched the step."""
    if os.environ.get("LAUNCHER_NODE_ADDRESS"):
        return os.environ["LAUNCHER_NODE_ADDRESS"]
    if os.environ.get("LAUNCHER_BACKEND") == "local":
        return "127.0.0.1"
    name = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    try:
        address = socket.gethostbyname(name)
        if not _is_loopback(address):
            return address
    except OSError:
        pass
    peer = os.environ.get("SLURM_LAUNCH_NODE_IPADDR")
    if peer:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((peer, 9))  # UDP connect sends nothing; it only picks the route
            return s.getsockname()[0]
    raise RuntimeError(f"cannot tell the cluster address of node {name}; set LAUNCHER_NODE_ADDRESS")


class NoSuchInterface(RuntimeError):
    """cluster.network_interface names an interface this node lacks (or one without an IPv4 address)."""


def interface_names() -> list[str]:
    """The network interfaces of this node (lo, eth0, ib0, ...)."""
    return [name for _, name in socket.if_nameindex()]


def interface_address(name: str) -> str:
    """The IPv4 address of interface `name` on this node (SIOCGIFADDR); NoSuchInterface names the ones it has."""
    import fcntl
    import struct

    names = interface_names()
    if name not in names:
        raise NoSuchInterface(f"cluster.network_interface={name}: {socket.gethostname()} has no interface {name} "
                              f"(it has: {', '.join(names)})")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
        except OSError:
            raise NoSuchInterface(f"cluster.network_interface={name}: interface {name} of {socket.gethostname()} "
                                  f"has no IPv4 address (interfaces: {', '.join(names)})") from None
    return socket.inet_ntoa(packed[20:24])


def cpus_seen() -> int:
    """The CPUs this process may run on (its affinity: what a cgroup-confined Slurm step got; `nproc`)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _bind_free_port(address: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def free_port(address: str = "") -> int:
    """A TCP port free on `address` now (the kernel picks it; whoever binds next wins a tiny race).

    "" means every interface; IPv6 addresses work too. An address this node cannot bind (e.g. a
    VLLM_HOST_IP that is not one of its own) falls back to every interface."""
    try:
        return _bind_free_port(address)
    except OSError:
        if not address:
            raise
        return _bind_free_port("")


def gpu_count() -> int:
    """NVIDIA GPUs this process can see (`nvidia-smi -L`, the driver's /proc entries), without importing
    torch; 0 without a driver or with CUDA_VISIBLE_DEVICES empty. The one GPU probe of the launcher."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", None)
    if visible in ("", "-1"):
        return 0
    count = 0
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
            if out.returncode == 0:
                count = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.TimeoutExpired):
            count = 0
    if count == 0:
        gpus = Path("/proc/driver/nvidia/gpus")
        count = sum(1 for _ in gpus.iterdir()) if gpus.is_dir() else 0
    if visible is not None and count:
        count = min(count, len([v for v in visible.split(",") if v.strip()]))
    return count


DEVICE_ENV = "LAUNCHER_DEVICE"  # "cuda" | "cpu": set by the step wrappers for what they exec
DEVICES = ("cuda", "cpu")


def resolve_device(requested: str) -> str:
    """plan.device on this node: "auto" -> "cuda" when gpu_count() > 0, else "cpu"; "cuda"/"cpu" as given.
    The step wrappers call it once and pass the answer on in LAUNCHER_DEVICE; nothing probes again."""
    if requested in DEVICES:
        return requested
    if requested != "auto":
        raise ValueError(f"device {requested!r} is none of auto, cuda, cpu")
    return "cuda" if gpu_count() > 0 else "cpu"


def slurm_hostnames(nodelist: str) -> list[str]:
    """Expand a Slurm node list (node[1-3],gpu7) with scontrol, which knows every syntax."""
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                         timeout=30, check=True)
    return out.stdout.split()


def program(name: str, python: str) -> str:
    """A console script of the interpreter's environment (venv), else whatever PATH has."""
    beside = Path(python).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)
