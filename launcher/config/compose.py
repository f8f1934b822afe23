"""Composed Hydra config -> the typed LaunchConfig every later stage reads (attributes, Enum members).

A missing mandatory key (`???`) and a key the schema does not have (added with `+section.key=...`, which
Hydra accepts into a typed section and OmegaConf would then drop) raise InvalidConfig naming the key;
the derive step fills server.gpus_per_node when it is null.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Union

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from launcher.config.derive import derive
from launcher.config.schema import LaunchConfig
from launcher.validate.problems import InvalidConfig, Problem


def to_launch_config(cfg: DictConfig) -> LaunchConfig:
    """Resolved, typed and derived; a missing or unknown key raises InvalidConfig naming it."""
    return derive(to_typed(cfg))


def to_typed(cfg: DictConfig) -> LaunchConfig:
    """Resolved and typed, before derive (a sweep copies this for its like points: launcher.sweep.typed)."""
    if OmegaConf.get_type(cfg) is not LaunchConfig:  # an untyped DictConfig: type it by the schema
        cfg = OmegaConf.merge(OmegaConf.structured(LaunchConfig), cfg)
    problems = [Problem((key,), "is required (no default); set it on the command line or in an experiment")
                for key in sorted(_missing_keys(cfg))]
    problems += _unknown_keys(cfg)
    if problems:
        raise InvalidConfig(problems)
    try:
        config = OmegaConf.to_object(cfg)
    except MissingMandatoryValue as e:  # e.g. an interpolation pointing at a missing key
        raise InvalidConfig([Problem((str(e.full_key),), "is required (no default)")]) from None
    assert isinstance(config, LaunchConfig)
    return config


def as_launch_config(cfg: Union[LaunchConfig, DictConfig]) -> LaunchConfig:
    """A LaunchConfig as is; a composed DictConfig typed."""
    return cfg if isinstance(cfg, LaunchConfig) else to_launch_config(cfg)


def _missing_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in cfg.keys():
        full = f"{prefix}{key}"
        if OmegaConf.is_missing(cfg, key):
            keys.append(full)
        else:
            node = cfg._get_node(key)
            if isinstance(node, DictConfig):
                keys += _missing_keys(node, full + ".")
    return keys


def _unknown_keys(cfg: DictConfig, prefix: str = "") -> list[Problem]:
    """Keys of typed sections that their dataclass does not declare (Hydra's `+key=` adds them)."""
    kind: Any = OmegaConf.get_type(cfg)
    if not dataclasses.is_dataclass(kind):
        return []  # an open mapping (grpo, env, sbatch): any key
    fields = [f.name for f in dataclasses.fields(kind)]
    problems = []
    for key in cfg.keys():
        full = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            problems.append(Problem((full,), f"is not a key of {kind.__name__} (docs/configuration.md lists "
                                             f"every key){hint}"))
            continue
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not OmegaConf.is_missing(cfg, key):
            problems += _unknown_keys(node, full + ".")
    return problems
