"""The CPU weight sync (launcher.sync) without a vLLM server: the byte buckets, the engine's group rank,
the vLLM plugin's registration, and a real gloo broadcast from the trainer's client (CpuVLLMClient) to the
real engine in a second process (tests/sync_stub_server.py: TRL's HTTP routes, TP=2 x DP=2 workers as
threads). The real server and a training run: tests/test_local_backend.py (test_smoke_run_learns...)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("vllm")

from launcher.node import free_port  # noqa: E402
from launcher.sync import BACKEND, SERVER_ARGS, SKIP_SYNC_ENV  # noqa: E402
from launcher.sync.wire import TensorMeta, buckets, metas, pack, unpack  # noqa: E402

HERE = Path(__file__).resolve().parent


def test_buckets_close_at_the_size_and_keep_the_order():
    items = [TensorMeta(f"t{i}", torch.float32, (n,)) for i, n in enumerate([2, 2, 5, 1, 1])]  # 8, 8, 20, 4, 4 bytes
    assert buckets(items, 16) == [[0, 1], [2], [3, 4]]
    assert buckets(items, 1 << 20) == [[0, 1, 2, 3, 4]]
    assert buckets(items, 1) == [[0], [1], [2], [3], [4]]


def test_pack_and_unpack_round_trip_any_dtype():
    tensors = [torch.randn(3, 4).to(torch.bfloat16), torch.arange(5, dtype=torch.int64), torch.tensor(2.5),
               torch.randn(4, 3).t()]  # the last one is not contiguous
    found = list(unpack(pack(tensors), [TensorMeta(str(i), t.dtype, tuple(t.shape)) for i, t in enumerate(tensors)]))
    assert all(torch.equal(a, b) for a, b in zip(tensors, found))


def test_metadata_names_a_bad_dtype_and_a_length_mismatch():
    with pytest.raises(ValueError, match="w: unknown dtype 'float99'"):
        metas(["w"], ["float99"], [[1]])
    with pytest.raises(ValueError, match="differ in length"):
        metas(["w", "v"], ["float32"], [[1]])


def test_worker_rank_counts_as_vllms_nccl_engine():
    from launcher.sync.engine import worker_rank

    config = lambda dp, tp_size, rank: SimpleNamespace(data_parallel_index=dp, world_size=tp_size, rank=rank)  # noqa: E731
    ranks = [worker_rank(config(dp, 2, tp), 1) for dp in range(2) for tp in range(2)]
    assert ranks == [1, 2, 3, 4]  # dp_index * TP * PP + tp_rank + 1: unique, after the trainer's rank 0


def test_the_plugin_registers_the_engine_once_and_again_quietly():
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

    from launcher.sync.engine import GlooWeightTransferEngine
    from launcher.sync.vllm_plugin import register

    register()
    register()  # vLLM calls it in each of its processes, and may call it twice in one
    assert WeightTransferEngineFactory._registry[BACKEND]() is GlooWeightTransferEngine
    assert SERVER_ARGS == ("--weight-transfer-config", '{"backend": "launcher_gloo"}')


class Stub:
    def __init__(self, tmp_path: Path, tp: int, dp: int, backend: str = BACKEND):
        port_file = tmp_path / "port"
        self.proc = subprocess.Popen([sys.executable, str(HERE / "sync_stub_server.py"), str(port_file), str(tp),
                                      str(dp), backend], stdin=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text()) and time.monotonic() < deadline:
            assert self.proc.poll() is None, "the stub server exited"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{port_file.read_text()}"

    def weights(self) -> dict:
        import requests

        return requests.get(f"{self.url}/weights", timeout=30).json()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


def trainer_model():
    torch.manual_seed(1)  # not the stub's seed: the server starts with other weights
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))


def sync(client, model) -> None:
    meta = [(n, str(p.dtype).removeprefix("torch."), list(p.shape)) for n, p in model.named_parameters()]
    client.update_named_params(meta, ((n, p.data) for n, p in model.named_parameters()))


def same_weights(worker: dict, model) -> bool:
    return all(torch.equal(torch.tensor(worker[n]), p.data.to(torch.bfloat16).float()) for n, p in model.named_parameters())


@pytest.mark.parametrize("skip", [False, True], ids=["synced", "counter-test: sync skipped"])
def test_the_trainers_weights_reach_every_worker(tmp_path, monkeypatch, skip):
    from launcher.sync.client import CpuVLLMClient

    if skip:
        monkeypatch.setenv(SKIP_SYNC_ENV, "1")
    stub = Stub(tmp_path, tp=2, dp=2)
    try:
        client = CpuVLLMClient(base_url=stub.url, group_port=free_port("127.0.0.1"), connection_timeout=30)
        client.init_communicator(device="cpu")
        model = trainer_model()
        sync(client, model)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(-2.0)  # a second step's weights
        sync(client, model)
        state = stub.weights()
        client.close_communicator()
    finally:
        stub.close()
    assert len(state["workers"]) == 4
    if skip:
        assert not any(same_weights(w, model) for w in state["workers"]) and state["started"] == [0] * 4
    else:
        assert all(same_weights(w, model) for w in state["workers"])
        assert state["started"] == state["finished"] == [2] * 4  # one update per sync, on every worker


def test_a_server_without_the_gloo_engine_is_refused_naming_the_flag(tmp_path):
    from launcher.sync.client import CpuVLLMClient

    stub = Stub(tmp_path, tp=1, dp=1, backend="nccl")
    try:
        client = CpuVLLMClient(base_url=stub.url, group_port=free_port("127.0.0.1"), connection_timeout=30)
        with pytest.raises(RuntimeError, match="runs the weight-transfer backend 'nccl'.*--weight-transfer-config"):
            client.init_communicator(device="cpu")
    finally:
        stub.close()


def test_the_client_is_swapped_in_only_while_the_trainer_is_built():
    import trl.generation.vllm_generation as generation

    from launcher.sync.client import CpuVLLMClient, cpu_weight_sync

    original = generation.VLLMClient
    with cpu_weight_sync(42.0):  # trainer.sync_timeout_s reaches the client (and from it the init info)
        assert issubclass(generation.VLLMClient, CpuVLLMClient) and generation.VLLMClient.timeout_s == 42.0
    assert generation.VLLMClient is original
