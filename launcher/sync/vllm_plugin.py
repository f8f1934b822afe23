"""vLLM general plugin (entry point `launcher_cpu_weight_sync`): registers the CPU weight-transfer engine
(launcher.sync.engine, lazily: nothing is imported until a server asks for the backend)."""

from launcher.sync import BACKEND


def register() -> None:
    """Called by vLLM in each of its processes (API server, engine core, workers); idempotent."""
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

    try:
        WeightTransferEngineFactory.register_engine(BACKEND, "launcher.sync.engine", "GlooWeightTransferEngine")
    except ValueError:
        pass  # registered already in this process
