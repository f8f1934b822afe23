"""The server side of the CPU weight sync: a vLLM WeightTransferEngine ("launcher_gloo") in each worker.

vLLM's worker (CPUWorker inherits gpu_worker.Worker) creates it at model load from
`--weight-transfer-config {"backend": "launcher_gloo"}` and drives it from the HTTP routes:
init_transfer_engine joins trainer rank 0's gloo group (launcher.sync.wire) as rank
`dp_index * TP * PP + rank + rank_offset` (as vLLM's NCCL engine counts); each update receives the
buckets cut from the metadata and loads them through the model's load_weights, inside vLLM's layerwise
reload (started/finished with the update, as the NCCL engine does, so checkpoint-format weights are
processed as at load time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vllm.distributed.weight_transfer.base import (WeightTransferEngine, WeightTransferInitInfo,
                                                   WeightTransferUpdateInfo)

from launcher.sync.wire import DEFAULT_BUCKET_BYTES, DEFAULT_TIMEOUT_S, GlooGroup, buckets, metas, unpack


@dataclass
class GlooInitInfo(WeightTransferInitInfo):
    master_address: str
    master_port: int
    rank_offset: int
    world_size: int
    timeout_s: float = DEFAULT_TIMEOUT_S
    bucket_bytes: int = DEFAULT_BUCKET_BYTES


@dataclass
class GlooUpdateInfo(WeightTransferUpdateInfo):
    names: list[str]
    dtype_names: list[str]
    shapes: list[list[int]]
    extra: dict[str, Any] = field(default_factory=dict)  # ignored keys (TRL may add "packed")

    def __post_init__(self) -> None:
        self.metas = metas(self.names, self.dtype_names, self.shapes)  # ValueError -> a 4xx naming the field


def worker_rank(parallel_config: Any, rank_offset: int) -> int:
    """This worker's rank in the trainer's group: unique across data-parallel engines."""
    return (parallel_config.data_parallel_index * parallel_config.world_size + parallel_config.rank
            + rank_offset)


def repack_kept_weights(model: Any) -> int:
    """Repack the CPU layers that kept their weight; returns how many.

    vLLM's CPU layers multiply with a packed copy of their weight (layer.cpu_linear), made when the
    weights are processed. The layerwise reload reprocesses each layer it loaded, but a tied lm_head loads
    nothing (its weight is embed_tokens') and would go on sampling from the copy of the first weights
    (measured: the trainer's and the server's logprobs drifted apart at every step). The layers that keep
    their weight beside the copy (the embedding method: remove_weight=False) are repacked from it here;
    the linear layers drop theirs and were reprocessed by the reload.
    """
    import torch
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    repacked = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if (hasattr(module, "cpu_linear") and isinstance(weight, torch.Tensor) and weight.ndim == 2
                and weight.numel() > 0 and not weight.is_meta):
            dispatch_cpu_unquantized_gemm(module, remove_weight=False)
            repacked += 1
    return repacked


class GlooWeightTransferEngine(WeightTransferEngine[GlooInitInfo, GlooUpdateInfo]):
    init_info_cls = GlooInitInfo
    update_info_cls = GlooUpdateInfo

    def __init__(self, config, vllm_config, device, model) -> None:
        super().__init__(config, vllm_config, device, model)
        self.group: GlooGroup | None = None
        self.bucket_bytes = DEFAULT_BUCKET_BYTES

    def parse_update_info(self, update_dict: dict[str, Any]) -> GlooUpdateInfo:
        known = {k: update_dict[k] for k in ("names", "dtype_names", "shapes") if k in update_dict}
        try:
            return GlooUpdateInfo(**known, extra={k: v for k, v in update_dict.items() if k not in known})
        except TypeError as e:
            raise ValueError(f"Invalid update_info for {type(self).__name__}: {e}") from e

    def init_transfer_engine(self, init_info: GlooInitInfo) -> None:
        self.shutdown()  # a new trainer replaces the last one's group
        self.bucket_bytes = int(init_info.bucket_bytes)
        self.group = GlooGroup(init_info.master_address, int(init_info.master_port),
                               worker_rank(self.parallel_config, int(init_info.rank_offset)),
                               int(init_info.world_size), float(init_info.timeout_s))

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model)

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.model_config)
        repack_kept_weights(self.model)

    def update_weights(self, update_info: dict[str, Any]) -> None:
        # the base class ends with torch.accelerator.synchronize(), which raises without an accelerator;
        # CPU copies are done when receive_weights returns
        self.receive_weights(self.parse_update_info(update_info))

    def receive_weights(self, update_info: GlooUpdateInfo) -> None:
        if self.group is None:
            raise RuntimeError("launcher_gloo weight transfer is not initialized: POST /init_weight_transfer_engine "
                               "first")
        import torch
        from vllm.model_executor.model_loader.mtp_validation import disable_mtp_completeness_check

        items = update_info.metas
        with disable_mtp_completeness_check():
            for indices in buckets(items, self.bucket_bytes):
                chosen = [items[i] for i in indices]
                buffer = torch.empty(sum(m.nbytes for m in chosen), dtype=torch.uint8)
                self.group.broadcast(buffer)
                self.model.load_weights(list(zip((m.name for m in chosen), unpack(buffer, chosen))))

    def shutdown(self) -> None:
        if self.group is not None:
            self.group.close()
            self.group = None
