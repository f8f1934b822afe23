"""What plan.txt and the dry-run say is trained on what: model and revision, dataset and split, the reward
functions with their weights (a reader can check a plan without opening config.yaml)."""

from conftest import compose
from launcher.plan.build import build_plan


def plan_lines(*overrides: str) -> list[str]:
    plan = build_plan(compose("+experiment=deepmath", "cluster=slurm", *overrides))
    return str(plan).splitlines()


def test_hub_model_and_dataset_with_revision_split_and_rewards():
    lines = plan_lines("model.revision=v1.0", "data.split=test", "data.config_name=default", "data.max_samples=500",
                       "reward.funcs=[trl.rewards.accuracy_reward,trl.rewards.think_format_reward]",
                       "reward.weights=[1.0,0.5]")
    assert lines[1:4] == [
        "  model:   Qwen/Qwen3-1.7B (hub, revision v1.0)",
        "  data:    trl-lib/DeepMath-103K (hub), split test, config default, first 500 rows",
        "  rewards: trl.rewards.accuracy_reward x 1, trl.rewards.think_format_reward x 0.5"]


def test_defaults_say_what_they_mean(tiny_model, data_file):
    assert plan_lines()[1:4] == [
        "  model:   Qwen/Qwen3-1.7B (hub, revision: the latest on main)",
        "  data:    trl-lib/DeepMath-103K (hub), split train, all rows",
        "  rewards: trl.rewards.accuracy_reward x 1 (TRL's default weights)"]
    local = plan_lines(f"model.name_or_path={tiny_model}", f"data.name_or_path={data_file}",
                       "model.trust_remote_code=true")
    assert local[1:3] == [f"  model:   {tiny_model} (local, trust_remote_code)",
                          f"  data:    {data_file} (local), split train, all rows"]


def test_plan_json_is_what_asdict_gives(tmp_path):
    """plan.json is built without dataclasses.asdict (a sweep writes one per point): the same text, for a plan
    with every kind of field (nested records, lists of records, mappings, None)."""
    import json
    from dataclasses import asdict

    from launcher.plan.plan import Plan

    for overrides in ((), ("trainer.nodes=2", "server.tensor_parallel_size=2")):
        plan = build_plan(compose("+experiment=deepmath", "cluster=slurm", *overrides))
        assert plan.to_json() == json.dumps(asdict(plan), indent=2)
        assert Plan.from_json(plan.to_json()) == plan
