"""Every check that can fail before anything is queued: the rules in the order they report, and `validate()`.

Each rule reads the typed config (launcher.config.schema.LaunchConfig) and the facts the backend could
gather (`Facts`: GPUs on this machine, partitions from sinfo, ...), and returns Problems that name the
key(s) to change and the numbers involved. The rules live by topic (topology, grpo, commands, names,
files, columns, env, slurm, resources, cpu_server, network, containers); they do no I/O of their own except reading a local model's config.json and a local data file's first rows, checking
that local paths exist and looking a container runtime up on PATH.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable, Union

from launcher.config.compose import as_launch_config
from launcher.config.derive import local_gpu_sets, trainer_processes
from launcher.config.schema import LaunchConfig
from launcher.validate.containers import check_containers
from launcher.validate.cpu_server import check_cpu_server
from launcher.validate.columns import check_columns
from launcher.validate.commands import check_extra_args, check_reward_modules, check_rewards
from launcher.validate.env import check_env
from launcher.validate.files import check_local_files, check_paths
from launcher.validate.lora import check_lora
from launcher.validate.grpo import (check_grpo_batch, check_grpo_counts, check_grpo_fields, check_grpo_ranges,
                                    check_lengths, check_model_context, grpo_fields)
from launcher.validate.names import check_name, check_ports, check_timeouts, check_walltime
from launcher.validate.network import check_network_interface
from launcher.validate.problems import EXIT_INVALID_CONFIG, Facts, InvalidConfig, Problem
from launcher.validate.resources import check_resources
from launcher.validate.slurm import check_sbatch, check_slurm_controller, check_slurm_facts
from launcher.validate.user_script import check_user_script
from launcher.validate.tracking import check_tracking
from launcher.validate.topology import (check_counts, check_cpu_trainer, check_data_parallel_dense, check_local_gpus,
                                        check_server_settings, check_server_topology, check_tensor_parallel_heads)

Rule = Callable[[LaunchConfig, Facts], "list[Problem]"]

RULES: tuple[Rule, ...] = (
    check_slurm_controller, check_name, check_counts, check_server_topology, check_tensor_parallel_heads, check_data_parallel_dense,
    check_grpo_fields, check_grpo_counts, check_grpo_batch, check_lengths, check_extra_args, check_walltime,
    check_timeouts, check_server_settings, check_ports, check_paths, check_columns, check_local_files, check_rewards, check_env,
    check_sbatch, check_local_gpus, check_slurm_facts, check_resources, check_cpu_server, check_network_interface,
    check_grpo_ranges, check_reward_modules, check_model_context, check_containers, check_cpu_trainer,
    check_user_script, check_lora, check_tracking,
)


def validate(cfg: Union[LaunchConfig, Mapping], facts: Facts = Facts()) -> list[Problem]:
    """All problems (errors and warnings) of a composed config, in the order of RULES."""
    config = as_launch_config(cfg)
    problems: list[Problem] = []
    for rule in RULES:
        problems += rule(config, facts)
    return problems


__all__ = ["EXIT_INVALID_CONFIG", "Facts", "InvalidConfig", "Problem", "RULES", "grpo_fields", "local_gpu_sets",
           "trainer_processes", "validate"]
