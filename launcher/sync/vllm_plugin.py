"""vLLM general plugin (entry point `launcher_cpu_weight_sync`): registers the CPU weight-transfer engine."""


def register() -> None:
    """Called by vLLM in each of its processes; must be idempotent."""
