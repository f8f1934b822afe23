"""Resume with several CPU processes: let torch.load accept the indexed CPU device accelerate gives them.

The cause (transformers 5.17, accelerate 1.15, torch 2.13): under `accelerate launch` on CPU every rank's
device is `torch.device("cpu", 0)` (accelerate indexes every device type: local rank % torch.cpu's device
count, 1). On resume, Trainer._load_optimizer_and_scheduler loads optimizer.pt with
`map_location=args.device` when world_size > 1, and torch's location registry knows "cpu" but not
"cpu:0": `RuntimeError: don't know how to restore data location of torch.storage.UntypedStorage (tagged
with cpu:0)`. One process (world size 1) maps to "cpu" and never meets it; GPUs map to "cuda:N", which
torch knows.

The fix registers, through torch's own extension point (torch.serialization.register_package), a
deserializer for "cpu:<n>" that keeps the storage where it is (on the CPU, the only one): nothing in
transformers or torch is patched, and nothing changes for a location torch already knows. Installed by
launcher.train.callback when the trainer is built, only for a CPU world of several processes.
"""

from __future__ import annotations

import re
from typing import Any, Optional

INDEXED_CPU = re.compile(r"cpu:\d+")
PRIORITY = 9  # before torch's own "cpu" entry (10), which answers None for "cpu:0"
_installed = False


def _tag_nothing(storage: Any) -> Optional[str]:
    return None  # saving is untouched: torch's own taggers name the location


def _indexed_cpu(storage: Any, location: str) -> Any:
    return storage if INDEXED_CPU.fullmatch(location) else None


def needed(device: Any, world_size: int) -> bool:
    """A CPU world of several processes whose device carries an index (accelerate's MULTI_CPU)."""
    return world_size > 1 and getattr(device, "type", None) == "cpu" and getattr(device, "index", None) is not None


def accept_indexed_cpu_locations() -> bool:
    """Register the "cpu:<n>" deserializer once; True when this call registered it."""
    global _installed
    if _installed:
        return False
    from torch.serialization import register_package

    register_package(PRIORITY, _tag_nothing, _indexed_cpu)
    _installed = True
    return True
