"""Composition: the Hydra app, its groups and the typed schema the later stages read."""

import subprocess

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from conftest import PYTHON, compose, compose_hydra
from launcher.config.compose import as_launch_config, to_launch_config
from launcher.config.schema import Backend, DataConfig, LaunchConfig, Mode, ServerConfig, Strategy
from launcher.paths import looks_local
from launcher.validate.problems import InvalidConfig


def test_deepmath_reproduces_the_seed():
    cfg = compose("+experiment=deepmath", "cluster=slurm")
    assert cfg.model.name_or_path == "Qwen/Qwen3-1.7B"
    assert cfg.data == DataConfig(name_or_path="trl-lib/DeepMath-103K", split="train", config_name=None,
                                  max_samples=None)
    assert cfg.reward.funcs == ["trl.rewards.accuracy_reward"]
    assert (cfg.server.nodes, cfg.server.gpus_per_node) == (1, 1)
    assert (cfg.server.tensor_parallel_size, cfg.server.data_parallel_size) == (1, 1)
    assert (cfg.trainer.nodes, cfg.trainer.gpus_per_node) == (1, 2)


def test_the_composed_config_is_the_typed_schema():
    cfg = compose("+experiment=deepmath", "cluster=slurm")
    assert isinstance(cfg, LaunchConfig) and isinstance(cfg.server, ServerConfig)
    assert cfg.trainer.strategy is Strategy.zero2 and cfg.mode is Mode.server and cfg.cluster.backend is Backend.slurm
    assert type(cfg.grpo) is dict and cfg.grpo["num_generations"] == 8  # open mappings stay mappings
    assert type(cfg.cluster.env) is dict and type(cfg.server.sbatch) is dict


def test_every_group_exists():
    cfg = compose("cluster=local", "server=default", "trainer=default", "model=qwen3_1_7b", "data=deepmath",
                  "reward=accuracy", "grpo=default", "+experiment=smoke")
    assert cfg.cluster.backend is Backend.local


def test_unknown_key_fails_at_composition():
    with pytest.raises(ConfigCompositionException) as info:
        compose("server.tensor_paralel_size=2")
    assert "tensor_paralel_size" in str(info.value.__cause__ or info.value)


def test_unknown_key_added_with_plus_is_invalid():
    """Hydra's `+key=` adds a key to a typed section; the typed config would drop it silently (issue 15)."""
    with pytest.raises(InvalidConfig) as info:
        compose("+server.bogus_key=1", "+trainer.stratgy=ddp")
    assert [str(p) for p in info.value.problems] == [
        "server.bogus_key: is not a key of ServerConfig (docs/configuration.md lists every key)",
        "trainer.stratgy: is not a key of TrainerConfig (docs/configuration.md lists every key); "
        "did you mean trainer.strategy?"]
    assert compose("+grpo.beta=0.1", "+cluster.env.FOO=1", "+server.sbatch.mem=0").grpo["beta"] == 0.1  # open


def test_wrong_type_fails_at_composition():
    with pytest.raises(ConfigCompositionException) as info:
        compose("server.nodes=two")
    cause = info.value.__cause__
    assert isinstance(cause, ValidationError) and "server.nodes" in str(cause)


def test_bad_enum_fails_at_composition():
    with pytest.raises(ConfigCompositionException) as info:
        compose("trainer.strategy=zero4")
    assert "zero4" in str(info.value.__cause__)


def test_any_grpo_field_can_be_added():
    cfg = compose("+grpo.beta=0.04", "grpo.learning_rate=3e-6")
    assert cfg.grpo["beta"] == 0.04 and cfg.grpo["learning_rate"] == 3e-6


def test_missing_mandatory_key_names_it():
    with pytest.raises(InvalidConfig) as info:
        compose("model.name_or_path=???")
    assert [str(p) for p in info.value.problems] == [
        "model.name_or_path: is required (no default); set it on the command line or in an experiment"]


def test_missing_key_behind_an_interpolation_names_it():
    composed = compose_hydra("name=${model.name_or_path}", "model.name_or_path=???")
    with pytest.raises(InvalidConfig) as info:
        to_launch_config(composed)
    assert "model.name_or_path: is required" in str(info.value)


@pytest.mark.parametrize("tp, dp, nodes, expected", [(2, 2, 1, 4), (4, 1, 2, 2), (3, 1, 2, 2), (0, 1, 1, 1)])
def test_server_gpus_per_node_is_derived_when_null(tp, dp, nodes, expected):
    cfg = compose(f"server.tensor_parallel_size={tp}", f"server.data_parallel_size={dp}", f"server.nodes={nodes}")
    assert cfg.server.gpus_per_node == expected
    assert compose("server.tensor_parallel_size=2", "server.gpus_per_node=8").server.gpus_per_node == 8


def test_config_yaml_records_enums_by_name():
    text = OmegaConf.to_yaml(compose("+experiment=deepmath", "cluster=slurm"))
    assert "strategy: zero2" in text and "mode: server" in text and "gpus_per_node: 1" in text


@pytest.mark.parametrize("name, local", [("Qwen/Qwen3-1.7B", False), ("trl-lib/DeepMath-103K", False),
                                         ("/data/model", True), ("./model", True), ("~/m", True),
                                         ("org/train.jsonl", True), ("Qwen/Qwen3 1.7B", True)])
def test_local_path_or_hub_id(name, local):
    assert looks_local(name) is local


def test_cli_rejects_unknown_key_with_hydra_message():
    out = subprocess.run([PYTHON, "-m", "launcher", "+experiment=deepmath", "cluster=slurm", "server.bogus=1",
                          "dry_run=true"], capture_output=True, text=True)
    assert out.returncode == 1
    assert "Key 'bogus' not in 'ServerConfig'" in out.stderr


def test_no_sbatch_means_local_in_one_line(tmp_path):
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}  # no sbatch on this PATH
    out = subprocess.run([PYTHON, "-m", "launcher", "+experiment=deepmath", "dry_run=true",
                          "trainer.gpus_per_node=1"], capture_output=True, text=True, env=env)
    assert out.stderr.count("no sbatch on PATH, running on this machine (cluster=local)") == 1
    assert "local backend" in out.stdout


def test_as_launch_config_types_a_composed_config_once():
    cfg = compose("+experiment=deepmath", "cluster=local")
    assert as_launch_config(cfg) is cfg
    typed = as_launch_config(compose_hydra("+experiment=deepmath", "cluster=local"))
    assert typed == cfg and typed.trainer.strategy is Strategy.zero2
