"""Placeholders in the plan's commands and settings, filled where the value is known (in the job).

The plan holds `{name}` markers for what only the job can know: {job_dir}, {attempt_dir}, {host},
{port}, {machine_rank}, {main_process_ip}, {main_process_port}, {trl_accelerate_configs}. One
function fills them in strings, lists and mappings alike; an unknown marker stays as it is.
"""

from __future__ import annotations

from typing import Any, Mapping

JOB_DIR = "job_dir"
ATTEMPT_DIR = "attempt_dir"
HOST = "host"
PORT = "port"
MACHINE_RANK = "machine_rank"
MAIN_PROCESS_IP = "main_process_ip"
MAIN_PROCESS_PORT = "main_process_port"
TRL_ACCELERATE_CONFIGS = "trl_accelerate_configs"


def marker(name: str) -> str:
    return "{" + name + "}"


def fill(value: Any, values: Mapping[str, Any]) -> Any:
    """`value` with every {name} of `values` replaced by str(values[name]); recurses into lists and dicts."""
    if isinstance(value, str):
        for name, new in values.items():
            value = value.replace(marker(name), str(new))
        return value
    if isinstance(value, dict):
        return {k: fill(v, values) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [fill(v, values) for v in value]
    return value
