"""A sweep's points typed by copying their group's template (launcher.sweep.typed) are exactly what typing
each point in full gives, and the copy is not used where a value depends on a swept key."""

from __future__ import annotations

import copy

import pytest
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf

from launcher.config.compose import to_launch_config
from launcher.sweep.points import PointConfigs, expand
from launcher.sweep.typed import TypedPoints, independent_of
from launcher.validate.problems import InvalidConfig


@pytest.fixture
def hydra_loader():
    with initialize_config_module(config_module="launcher.conf", version_base="1.3"):
        yield


def sweep(*overrides: str):
    """(each point's (index, a copy of its DictConfig, its fast-typed LaunchConfig or None), the TypedPoints)."""
    import hydra_plugins.launcher_sweep.plugins  # noqa: F401 - its ConfigStore nodes

    loader = GlobalHydra.instance().config_loader()
    master = loader.load_configuration("config", list(overrides), RunMode.MULTIRUN)
    points = expand([str(o) for o in OmegaConf.to_container(master.hydra.overrides.task)], loader)
    configs, typing, out = PointConfigs(loader, master, points), TypedPoints(), []
    for i in range(len(points)):
        cfg = configs.get(i)
        typed = typing.typed(configs.group(i), configs.values(i), cfg)
        out.append((i, copy.deepcopy(cfg), typed))
    return out, typing


def test_copied_points_equal_points_typed_in_full(hydra_loader):
    points, typing = sweep("+experiment=smoke", "cluster=slurm", "+cluster.sbatch.hold=true",
                           "server.tensor_parallel_size=1,2", "device=cpu,cuda", "grpo.learning_rate=1e-6,2e-6",
                           "+grpo.seed=range(0,2)", "server.gpu_memory_utilization=1,0.5", "server.host=a,b")
    assert len(points) == 64 and typing.copied == 63  # the first point is the template
    for _, cfg, typed in points:
        assert typed == to_launch_config(cfg)
    # every swept value arrived, converted as OmegaConf converts it for the field
    assert {(p[2].device.value, p[2].server.tensor_parallel_size, p[2].grpo["seed"]) for p in points} == \
        {(d, tp, s) for d in ("cpu", "cuda") for tp in (1, 2) for s in (0, 1)}
    assert {type(p[2].server.gpu_memory_utilization) for p in points} == {float}
    # derive ran per point: gpus_per_node follows each point's TP
    assert {(p[2].server.tensor_parallel_size, p[2].server.gpus_per_node) for p in points} == {(1, 1), (2, 2)}


def test_points_are_independent_copies(hydra_loader):
    points, _ = sweep("+experiment=smoke", "cluster=slurm", "+grpo.seed=range(0,3)")
    typed = [p[2] for p in points]
    typed[1].cluster.env["X"] = "changed"
    assert "X" not in typed[2].cluster.env and [t.grpo["seed"] for t in typed] == [0, 1, 2]


def test_a_value_that_follows_a_swept_key_is_typed_in_full(hydra_loader):
    """Counter-test: with `name` interpolating the swept key, copying the template would give every point
    the first point's name."""
    points, typing = sweep("+experiment=smoke", "cluster=slurm", "trainer.nodes=1,2", "name=run-${trainer.nodes}")
    assert typing.copied == 0 and all(p[2] is None for p in points[1:])
    assert [to_launch_config(p[1]).name for p in points] == ["run-1", "run-2"]


def test_an_unknown_key_is_left_to_launch_to_report(hydra_loader):
    points, typing = sweep("+experiment=smoke", "cluster=slurm", "+server.no_such_key=1,2")
    assert typing.copied == 0 and all(p[2] is None for p in points)
    with pytest.raises(InvalidConfig, match="no_such_key"):
        to_launch_config(points[1][1])


def test_the_dependency_test():
    cfg = OmegaConf.create({"a": {"b": 1}, "c": "${oc.env:HOME}/x", "d": "${a.b}", "e": "${.c}", "f": "${a}"})
    assert independent_of(OmegaConf.create({"c": "${oc.env:HOME,${oc.env:USER}}", "a": {"b": 1}}), ("a.b",))
    assert not independent_of(cfg, ("a.b",))  # d reads it
    assert not independent_of(OmegaConf.create({"a": {"b": 1}, "f": "${a}"}), ("a.b",))  # f reads a.b's parent
    assert independent_of(OmegaConf.create({"a": {"b": 1, "z": 2}, "d": "${a.z}"}), ("a.b",))
    assert not independent_of(OmegaConf.create({"a": {"b": 1}, "e": "${.a}"}), ("a.b",))  # relative: not followed
    assert not independent_of(OmegaConf.create({"a": {"b": "${oc.env:HOME}"}}), ("a.b",))  # the swept key itself


def test_config_yaml_of_like_points_reuses_sections_and_stays_what_omegaconf_writes():
    """config.yaml keeps each top-level section's text; a point that differs in one section gets that one
    dumped again, and every text is still OmegaConf's."""
    from conftest import compose
    from launcher.jobfolder import config_record

    config_record._SECTIONS.clear()
    for seed in (1, 2, 1):
        for value in ("'yes'", "'1e5'", "plain"):
            cfg = compose("+experiment=smoke", "cluster=slurm", f"+grpo.seed={seed}", f"cluster.partition={value}")
            assert config_record.config_yaml(cfg) == OmegaConf.to_yaml(cfg)
    sections = [name for name, _ in config_record._SECTIONS]
    assert sections.count("grpo") == 2 and sections.count("cluster") == 3 and sections.count("server") == 1
