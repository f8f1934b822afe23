"""Composition: the Hydra app, its groups and the typed schema."""

import subprocess

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from conftest import PYTHON, compose


def test_deepmath_reproduces_the_seed():
    cfg = compose("+experiment=deepmath", "cluster=slurm")
    assert cfg["model"]["name_or_path"] == "Qwen/Qwen3-1.7B"
    assert cfg["data"] == {"name_or_path": "trl-lib/DeepMath-103K", "split": "train", "config_name": None,
                           "max_samples": None}
    assert cfg["reward"]["funcs"] == ["trl.rewards.accuracy_reward"]
    assert (cfg["server"]["nodes"], cfg["server"]["gpus_per_node"]) == (1, 1)
    assert (cfg["server"]["tensor_parallel_size"], cfg["server"]["data_parallel_size"]) == (1, 1)
    assert (cfg["trainer"]["nodes"], cfg["trainer"]["gpus_per_node"]) == (1, 2)


def test_every_group_exists():
    cfg = compose("cluster=local", "server=default", "trainer=default", "model=qwen3_1_7b", "data=deepmath",
                  "reward=accuracy", "grpo=default", "+experiment=smoke")
    assert cfg["cluster"]["backend"] == "local"


def test_unknown_key_fails_at_composition():
    with pytest.raises(ConfigCompositionException) as info:
        compose("server.tensor_paralel_size=2")
    assert "tensor_paralel_size" in str(info.value.__cause__ or info.value)


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
    assert cfg["grpo"]["beta"] == 0.04 and cfg["grpo"]["learning_rate"] == 3e-6


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
