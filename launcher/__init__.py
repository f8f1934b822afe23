"""launcher: TRL GRPO + a separate vLLM server as ONE heterogeneous Slurm job (or local processes)."""

__version__ = "0.1.0"
