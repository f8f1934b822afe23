"""The trainer side of the CPU weight sync: TRL's VLLMClient with a gloo communicator (launcher.sync.wire).

TRL's `VLLMClient.init_communicator` refuses a non-CUDA device. `CpuVLLMClient` overrides the three methods
that touch the communicator and keeps everything else (HTTP session, generate, the `weight_update`
grouping, reset_prefix_cache) as TRL wrote it; on a CUDA device it defers to TRL unchanged.
`cpu_weight_sync()` swaps it in for the one name TRL's VLLMGeneration builds its client from, only while
GRPOTrainer is constructed (the client is made in the constructor). Delete this module when TRL ships a
CPU path.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import time
import threading
from concurrent.futures import Future
from typing import Iterator, Optional

import torch
from trl.generation.vllm_client import VLLMClient

from launcher.jobfolder.names import JOB_DIR_ENV
from launcher.sync import BACKEND, PAUSE_SYNC_ENV, PAUSED_MARKER, RESUME_MARKER, SERVER_ARGS, SKIP_SYNC_ENV
from launcher.sync.wire import DEFAULT_BUCKET_BYTES, DEFAULT_TIMEOUT_S, GlooGroup, buckets, metas, pack


def _trainer_address() -> str:
    """Where the workers reach trainer rank 0: VLLM_HOST_IP (the trainer step sets it), else vLLM's guess."""
    from vllm.utils.network_utils import get_ip

    return os.environ.get("VLLM_HOST_IP") or get_ip()


class CpuVLLMClient(VLLMClient):
    """VLLMClient whose weight-update group is gloo (trainer rank 0 = group rank 0, workers from 1).

    `timeout_s` (trainer.sync_timeout_s) bounds every part of an update: the gloo rendezvous and broadcasts
    on both sides (the workers get it in the init info) and each HTTP request of the sync, so a server that
    died or froze mid-update fails the sync instead of hanging it."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    bucket_bytes: int = DEFAULT_BUCKET_BYTES

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gloo: Optional[GlooGroup] = None
        self.skip_sync = os.environ.get(SKIP_SYNC_ENV, "") not in ("", "0")
        pause = os.environ.get(PAUSE_SYNC_ENV, "")
        self.pause_at = int(pause) if pause.isdigit() else 0
        self.syncs = 0

    def _start_weight_update(self):
        self._post(f"{self.base_url}/start_weight_update", json={}, timeout=self.timeout_s)
        self.syncs += 1
        if self.gloo is not None and self.syncs == self.pause_at:
            self._debug_pause()

    def _finish_weight_update(self):
        self._post(f"{self.base_url}/finish_weight_update", json={}, timeout=self.timeout_s)

    def _debug_pause(self) -> None:
        """PAUSE_SYNC_ENV: stop between /start_weight_update and /update_weights, once per job, until the test
        that injects a fault there says go on (launcher.sync)."""
        job_dir = os.environ.get(JOB_DIR_ENV)
        if not job_dir:
            return
        marker = os.path.join(job_dir, PAUSED_MARKER)
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return  # paused in an earlier attempt already
        with os.fdopen(fd, "w") as f:
            json.dump({"sync": self.syncs, "pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}, f)
        print(f"[launcher] {PAUSE_SYNC_ENV}: sync {self.syncs} paused after /start_weight_update ({marker})",
              flush=True)
        resume = os.path.join(job_dir, RESUME_MARKER)
        while not os.path.exists(resume):
            time.sleep(0.2)

    def init_communicator(self, device: torch.device | str | int = 0):
        if isinstance(device, int) or torch.device(device).type == "cuda":
            return super().init_communicator(device)  # TRL's NCCL path, as it is
        config = self.get_server_info().get("weight_transfer_config") or {}
        if config.get("backend") != BACKEND:
            raise RuntimeError(
                f"the vLLM server at {self.base_url} runs the weight-transfer backend {config.get('backend')!r}, "
                f"but a CPU trainer syncs over {BACKEND!r}: start it with `{' '.join(SERVER_ARGS[:1])} "
                f"'{SERVER_ARGS[1]}'` (the launcher's server wrapper adds it on CPU)")
        world_size = self.get_world_size() + 1
        init_info = {"master_address": _trainer_address(), "master_port": self.group_port, "rank_offset": 1,
                     "world_size": world_size, "timeout_s": self.timeout_s, "bucket_bytes": self.bucket_bytes}
        # the workers join the group inside the request: post it while rank 0 joins
        def join() -> None:
            self.gloo = GlooGroup(init_info["master_address"], self.group_port, 0, world_size, self.timeout_s)

        self._while_posting("/init_weight_transfer_engine", {"init_info": init_info}, join)
        atexit.register(self.close_communicator)

    def _while_posting(self, route: str, body: dict, work) -> None:
        """POST route on a side thread while `work()` runs here; both must succeed within the timeout. When
        `work` fails, the request is not waited for (the server's side of the group fails within the group's
        timeout); the thread is a daemon so that a request to a frozen server cannot hold the process's exit."""
        done: Future = Future()

        def post() -> None:
            try:
                done.set_result(self._post(f"{self.base_url}{route}", json=body, timeout=self.timeout_s))
            except BaseException as e:  # noqa: BLE001 -- handed to the caller
                done.set_exception(e)

        threading.Thread(target=post, name=f"launcher-sync{route}", daemon=True).start()
        work()
        done.result(timeout=self.timeout_s)

    def update_named_params(self, metadata: list[tuple[str, str, list[int]]],
                            named_params: Iterator[tuple[str, torch.Tensor]]):
        if self.gloo is None:
            return super().update_named_params(metadata, named_params)
        if self.skip_sync:
            for _ in named_params:  # still take part in whatever gathering the iterator does
                pass
            return None
        names, dtype_names, shapes = (list(field) for field in zip(*metadata, strict=True))
        items = metas(names, dtype_names, shapes)
        if not self._updating_weights:
            self._start_weight_update()
        pairs = iter(named_params)

        def send() -> None:
            for indices in buckets(items, self.bucket_bytes):
                tensors = []
                for i in indices:
                    name, tensor = next(pairs)
                    if name != items[i].name or tuple(tensor.shape) != items[i].shape:
                        raise RuntimeError(f"weight sync: got {name} {tuple(tensor.shape)} where the metadata "
                                           f"announced {items[i].name} {items[i].shape}")
                    tensors.append(tensor.to(items[i].dtype))
                self.gloo.broadcast(pack(tensors))
            # run TRL's iterator to its end, as TRL's NCCL producer does: with LoRA its last step unmerges the adapter
            extra = next(pairs, None)
            if extra is not None:
                raise RuntimeError(f"weight sync: got {extra[0]} after the {len(items)} tensors the metadata announced")

        # the workers receive inside the request: post it while rank 0 broadcasts
        self._while_posting("/update_weights", {"update_info": {"names": names, "dtype_names": dtype_names,
                                                                "shapes": shapes}}, send)
        if not self._updating_weights:
            self._finish_weight_update()
        return None

    def close_communicator(self):
        if self.gloo is not None:
            self.gloo.close()
            self.gloo = None
        else:
            super().close_communicator()


@contextlib.contextmanager
def cpu_weight_sync(timeout_s: float = DEFAULT_TIMEOUT_S):
    """While GRPOTrainer is built: TRL's VLLMGeneration makes a CpuVLLMClient (whose syncs are bounded by
    `timeout_s`) instead of a VLLMClient."""
    import trl.generation.vllm_generation as generation

    original = generation.VLLMClient
    generation.VLLMClient = type("CpuVLLMClient", (CpuVLLMClient,), {"timeout_s": float(timeout_s)})
    try:
        yield
    finally:
        generation.VLLMClient = original
