"""Which process this is among the trainer's processes, and the ports only rank 0 needs.

`accelerate launch` sets RANK / WORLD_SIZE (absent: one plain process, rank 0). The weight-sync group
port (TRL's vllm_group_port) is LAUNCHER_GROUP_PORT when the plan fixes it, else a free port on
VLLM_HOST_IP picked by global rank 0, the only rank that joins that group.
"""

from __future__ import annotations

import os
import sys

from launcher.node import free_port
from launcher.train.errors import JobError

UNUSED_GROUP_PORT = 51216  # TRL's default; ranks other than 0 never open it


def global_rank() -> int:
    """Global rank from the launcher's environment (accelerate/torchrun RANK); 0 when run plainly."""
    for name in ("RANK", "ACCELERATE_PROCESS_INDEX"):
        value = os.environ.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                pass
    return 0


def world_size() -> int:
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def group_port(is_main: bool) -> int:
    """vllm_group_port: LAUNCHER_GROUP_PORT, else (rank 0) a free port on VLLM_HOST_IP."""
    value = os.environ.get("LAUNCHER_GROUP_PORT")
    if value:
        try:
            port = int(value)
        except ValueError:
            raise JobError(f"LAUNCHER_GROUP_PORT={value!r} is not a port number") from None
        if not 1 <= port <= 65535:
            raise JobError(f"LAUNCHER_GROUP_PORT={port} is not a port number")
        return port
    if not is_main:
        return UNUSED_GROUP_PORT
    return free_port(os.environ.get("VLLM_HOST_IP") or "")


def shutdown_distributed() -> None:
    """Leave torch.distributed cleanly when training set it up (no warning about a leaked group)."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    except Exception:  # noqa: BLE001
        pass
