"""Shared test helpers: compose the real Hydra config the way the CLI does, and fake executables on PATH."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from omegaconf import DictConfig

from launcher.config import schema
from launcher.config.compose import to_launch_config
from launcher.config.schema import LaunchConfig

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
# the environment pytest started with, before any test module imports vLLM: its import writes
# TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor_<user> into os.environ, which a job submitted from this process
# would then carry as the user's own setting (and the launcher's shared caches rightly yield to it)
ENV_AT_START = dict(os.environ)

schema.register()


def compose_hydra(*overrides: str) -> DictConfig:
    """The composed DictConfig that `python -m launcher <overrides>` hands to launcher.launch.launch()."""
    with initialize_config_module(config_module="launcher.conf", version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def compose(*overrides: str) -> LaunchConfig:
    """The typed config `python -m launcher <overrides>` would launch (derived keys filled)."""
    return to_launch_config(compose_hydra(*overrides))


def fake_executable(directory: Path, name: str, script: str) -> Path:
    """An executable `directory/name` running `script`: a whole script with its #! line, or bash lines."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(script if script.startswith("#!") else "#!/bin/bash\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    """A local model folder with only a config.json (what validation reads)."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"num_attention_heads": 16, "num_key_value_heads": 8}')
    return model


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text('{"prompt": [{"role": "user", "content": "1+1?"}], "solution": "2"}\n')
    return path


def smoke_cache() -> Path:
    return Path(os.environ.get("LAUNCHER_CACHE", Path.home() / ".cache" / "launcher")) / "smoke"


@pytest.fixture(scope="session")
def smoke_assets_local() -> Path:
    """The tiny model and dataset, built offline by the project's own script."""
    import subprocess

    out = subprocess.run([PYTHON, str(REPO / "scripts" / "make_smoke_assets.py")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (smoke_cache() / "model" / "config.json").exists()
    return smoke_cache()
