"""Shared test helpers: compose the real Hydra config the way the CLI does."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_module

from launcher.config import schema
from launcher.config.compose import to_plain_dict

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

schema.register()


def compose(*overrides: str) -> dict:
    """The plain config dict `python -m launcher <overrides>` would launch."""
    with initialize_config_module(config_module="launcher.conf", version_base="1.3"):
        return to_plain_dict(hydra_compose(config_name="config", overrides=list(overrides)))


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
