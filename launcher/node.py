"""Facts about the node a component runs on: its cluster address, free ports, CUDA. Stdlib only."""

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


def free_port(address: str = "") -> int:
    """A port free on `address` now (the kernel picks it; whoever binds next wins a tiny race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def has_cuda() -> bool:
    """Whether this process can see an NVIDIA GPU, without importing torch."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir() and any(gpus.iterdir()):
        return True
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
            return out.returncode == 0 and "GPU " in out.stdout
        except (OSError, subprocess.TimeoutExpired):
            return False
    return False


def slurm_hostnames(nodelist: str) -> list[str]:
    """Expand a Slurm node list (node[1-3],gpu7) with scontrol, which knows every syntax."""
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                         timeout=30, check=True)
    return out.stdout.split()


def program(name: str, python: str) -> str:
    """A console script of the interpreter's environment (venv), else whatever PATH has."""
    beside = Path(python).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)
