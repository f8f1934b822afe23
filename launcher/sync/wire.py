"""The wire between trainer rank 0 and the vLLM workers: a gloo group and the byte buckets sent over it.

The group lives outside either side's torch.distributed world (vLLM's workers have their own; the trainer
may run under accelerate): trainer rank 0 hosts a TCPStore on (master_address, master_port), every member
builds a ProcessGroupGloo on it directly and rank 0 broadcasts. Each member's gloo device binds the local
address that routes to the master, so several network namespaces or interfaces work without GLOO_SOCKET_IFNAME.
The timeout bounds the rendezvous and every broadcast: a peer that died mid-update fails the call instead of
hanging it.

Tensors travel as raw bytes (any dtype, bf16 included), packed into buckets of about `bucket_bytes`: both
sides cut the same buckets from the same metadata (names, dtypes, shapes), so only metadata goes over HTTP.
"""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch
from torch.distributed import PrefixStore, ProcessGroupGloo, TCPStore

DEFAULT_BUCKET_BYTES = 64 << 20
DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        numel = 1
        for n in self.shape:
            numel *= n
        return numel * torch.empty((), dtype=self.dtype).element_size()


def metas(names: Sequence[str], dtype_names: Sequence[str], shapes: Sequence[Sequence[int]]) -> list[TensorMeta]:
    """The metadata TRL's update_info carries ("float32", not "torch.float32")."""
    if not len(names) == len(dtype_names) == len(shapes):
        raise ValueError(f"update_info: names, dtype_names and shapes differ in length "
                         f"({len(names)}, {len(dtype_names)}, {len(shapes)})")
    found = []
    for name, dtype_name, shape in zip(names, dtype_names, shapes):
        dtype = getattr(torch, str(dtype_name), None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"update_info: {name}: unknown dtype {dtype_name!r}")
        found.append(TensorMeta(name, dtype, tuple(int(n) for n in shape)))
    return found


def buckets(items: Sequence[TensorMeta], bucket_bytes: int) -> list[list[int]]:
    """Indices of `items` per bucket, in order: a bucket closes once it holds at least bucket_bytes."""
    out: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i, meta in enumerate(items):
        current.append(i)
        size += meta.nbytes
        if size >= bucket_bytes:
            out.append(current)
            current, size = [], 0
    if current:
        out.append(current)
    return out


def as_bytes(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8)


def pack(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    parts = [as_bytes(t) for t in tensors]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def unpack(buffer: torch.Tensor, items: Sequence[TensorMeta]) -> Iterator[torch.Tensor]:
    offset = 0
    for meta in items:
        chunk = buffer[offset:offset + meta.nbytes]
        offset += meta.nbytes
        yield chunk.view(meta.dtype).reshape(meta.shape)


def local_address_towards(host: str, port: int) -> str:
    """The local address the kernel routes to host (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, port))
        return probe.getsockname()[0]


class GlooGroup:
    """One member of the trainer<->workers gloo group; rank 0 (trainer) hosts the store and sends."""

    def __init__(self, master_address: str, master_port: int, rank: int, world_size: int,
                 timeout_s: float = DEFAULT_TIMEOUT_S):
        if not 0 <= rank < world_size:
            raise ValueError(f"gloo group: rank {rank} is outside the group of {world_size}")
        self.rank, self.world_size = rank, world_size
        self.timeout = dt.timedelta(seconds=timeout_s)
        self.store = TCPStore(master_address, master_port, world_size, rank == 0, self.timeout,
                              wait_for_workers=False)
        options = ProcessGroupGloo._Options()
        options._timeout = self.timeout
        options._devices = [ProcessGroupGloo.create_device(
            hostname=master_address if rank == 0 else local_address_towards(master_address, master_port))]
        # blocks until every member has joined (bounded by the timeout)
        self.group = ProcessGroupGloo(PrefixStore("launcher-sync", self.store), rank, world_size, options)

    def broadcast(self, tensor: torch.Tensor) -> None:
        """From rank 0 into `tensor` on every other member (contiguous, CPU)."""
        self.group.broadcast(tensor, 0).wait(self.timeout)

    def close(self) -> None:
        self.group = None  # type: ignore[assignment]
        self.store = None  # type: ignore[assignment]
