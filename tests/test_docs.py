"""Docs that must stay true: the generated key reference and the README's commands."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_up_to_date():
    spec = importlib.util.spec_from_file_location("gen_config_docs", REPO / "scripts" / "gen_config_docs.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (REPO / "docs" / "configuration.md").read_text() == gen.render(), \
        "docs/configuration.md is stale: run scripts/gen_config_docs.py"


def test_every_schema_key_is_documented():
    text = (REPO / "docs" / "configuration.md").read_text()
    for key in ("server.tensor_parallel_size", "server.startup_timeout_s", "trainer.strategy", "cluster.sbatch",
                "cluster.secret_env", "dry_run", "grpo"):
        assert f"`{key}`" in text
