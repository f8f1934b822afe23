"""What a resumed attempt started from, `<attempt_dir>/resume.json`, written by global rank 0 at train begin
when training resumes from a checkpoint (global step > 0): the step, and digests of the weights and of the
optimizer state as loaded, before any step of this attempt changes them.

It is what shows that a requeued job continues from the checkpoint and not from a fresh model: the digests
equal the same digests computed from the checkpoint's files (tests/integration/test_sync_faults.py). The
weights digest is launcher.train.rank_record's; the optimizer digest is sha256 over the optimizer's
state_dict()["state"] (per parameter index, per key in name order: every tensor's dtype, shape and bytes,
other values by repr), so a torch.load of the checkpoint's optimizer.pt gives the same. Both are skipped
(None) above rank_record.DIGEST_MAX_PARAMS, like the rank records.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from launcher.jobfolder.jsonio import write_json_atomic
from launcher.train.rank_record import DIGEST_MAX_PARAMS, weights_digest

RESUME_RECORD = "resume.json"


def optimizer_state_digest(state: Mapping[Any, Mapping[str, Any]]) -> str:
    """sha256 of an optimizer state_dict's "state" (what optimizer.pt holds under "state")."""
    import torch

    digest = hashlib.sha256()
    for index in sorted(state):
        for key in sorted(state[index]):
            value = state[index][key]
            digest.update(f"{index}|{key}|".encode())
            if isinstance(value, torch.Tensor):
                tensor = value.detach().to("cpu").contiguous()
                digest.update(f"{tensor.dtype}|{tuple(tensor.shape)}|".encode())
                digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
            else:
                digest.update(repr(value).encode())
    return digest.hexdigest()


def write_resume_record(attempt_dir: Path, step: int, model: Any, optimizer: Any) -> Optional[Path]:
    """resume.json for a training that (re)starts at `step` > 0; None when there is nothing to record."""
    if not step or model is None:
        return None
    inner = getattr(model, "module", model)
    small = sum(p.numel() for p in inner.parameters()) <= DIGEST_MAX_PARAMS
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer
    state = optimizer.state_dict().get("state") if optimizer is not None and small else None
    path = Path(attempt_dir) / RESUME_RECORD
    write_json_atomic(path, {"step": step, "weights_sha256": weights_digest(model),
                             "optimizer_sha256": optimizer_state_digest(state) if state else None,
                             "optimizer_tensors": sum(len(v) for v in state.values()) if state else 0,
                             "time": time.time()})
    return path
