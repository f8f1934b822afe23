"""config.yaml: the resolved config, written into the job folder as a record (the job reads plan.json).

The text is what `OmegaConf.to_yaml` writes for the same config (a test pins it), without building an
OmegaConf tree of the typed config first: that cost ~12 ms a point of a sweep.
"""

from __future__ import annotations

import dataclasses
import enum
import typing as tp

import yaml
from omegaconf import OmegaConf


# config.yaml is written as OmegaConf.to_yaml(cfg) writes it (tests/test_slurm_executor.py keeps the two
# equal), without first building an OmegaConf node tree of the typed config: that costs ~12 ms a point.
_YAML_WORDS = {"y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false", "False",
               "FALSE", "on", "On", "ON", "off", "Off", "OFF"}


class _RecordDumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # libyaml's emitter when PyYAML has it
    """Quotes a string that reads back as a boolean or a number."""


def _reads_as_number(text: str) -> bool:
    for kind in (int, float):
        try:
            kind(text)
            return True
        except ValueError:
            pass
    return False


def _represent_str(dumper: tp.Any, text: str) -> yaml.ScalarNode:
    quoted = text in _YAML_WORDS or _reads_as_number(text)
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="'" if quoted else None)


_RecordDumper.add_representer(str, _represent_str)


def _plain(value: tp.Any) -> tp.Any:
    """The typed config as nested dicts and lists, Enum members as their names (as OmegaConf writes them)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, tp.Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# A block mapping's text is its entries' texts one after another, so each top-level section is dumped on
# its own and kept: the points of a sweep differ in a section or two, and dump only those again.
_SECTIONS: dict[tuple[str, str], str] = {}
_MAX_SECTIONS = 512


def _dump(plain: tp.Any) -> str:
    return yaml.dump(plain, Dumper=_RecordDumper, default_flow_style=False, allow_unicode=True, sort_keys=False)


def config_yaml(cfg: tp.Any) -> str:
    """The resolved config as config.yaml records it."""
    if not dataclasses.is_dataclass(cfg):
        return OmegaConf.to_yaml(cfg)
    parts = []
    for name, value in _plain(cfg).items():
        key = (name, repr(value))  # repr tells 1, 1.0, True and '1' apart
        text = _SECTIONS.get(key)
        if text is None:
            if len(_SECTIONS) >= _MAX_SECTIONS:
                _SECTIONS.clear()
            text = _SECTIONS[key] = _dump({name: value})
        parts.append(text)
    return "".join(parts) if parts else _dump({})
