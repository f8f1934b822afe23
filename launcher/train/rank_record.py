"""Each training rank's own record, `<attempt_dir>/ranks/rank-<N>.json`, written by every rank (not only
global rank 0) when its training ends: where it ran (host, local rank, world size), the optimizer steps it
took in this attempt, the global step it started from (a resumed checkpoint's), and a digest of its weights.

It is what shows that a trainer over several nodes trained as one job: every rank lists every step, and
data-parallel ranks end with the same digest (a rank that drifted, or trained alone, would not). The
steps cost an integer append each; the digest is computed once, at the end, on the weights as they are
(sha256 over every parameter's name, dtype, shape and bytes, in name order), and skipped above
DIGEST_MAX_PARAMS (a large model's copy to host memory is not worth a record) and for sharded parameters.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path
from typing import Any, Optional

from launcher.jobfolder.jsonio import write_json_atomic

RANKS_DIR = "ranks"
DIGEST_MAX_PARAMS = 500_000_000


def record_path(attempt_dir: Path, rank: int) -> Path:
    return Path(attempt_dir) / RANKS_DIR / f"rank-{rank}.json"


def weights_digest(model: Any, max_params: int = DIGEST_MAX_PARAMS) -> Optional[str]:
    """sha256 of the model's parameters (DDP's wrapper looked through); None above `max_params` or when the
    parameters are sharded (ZeRO-3, FSDP2: a rank holds only its part, so digests would differ by design)."""
    model = getattr(model, "module", model)
    params = sorted(model.named_parameters(), key=lambda item: item[0])
    if sum(p.numel() for _, p in params) > max_params:
        return None
    if any(hasattr(p, "ds_numel") or type(p).__name__ == "DTensor" for _, p in params):
        return None
    digest = hashlib.sha256()
    for name, param in params:
        tensor = param.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(_byte_dtype()).numpy().tobytes())
    return digest.hexdigest()


def _byte_dtype():
    import torch

    return torch.uint8


def write_record(attempt_dir: Path, rank: int, world_size: int, steps: list[int], model: Any,
                 started_at: Optional[int]) -> Path:
    """This rank's record; returns its path."""
    path = record_path(attempt_dir, rank)
    write_json_atomic(path, {
        "rank": rank, "world_size": world_size, "local_rank": int(os.environ.get("LOCAL_RANK", "0") or 0),
        "host": socket.gethostname(), "pid": os.getpid(), "steps": steps, "started_at": started_at,
        "weights_sha256": weights_digest(model), "time": time.time()})
    return path
