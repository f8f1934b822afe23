"""Composed Hydra config -> the plain dict every other layer reads."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from .validate import InvalidConfig, Problem


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"not JSON-able: {value!r}")


def to_plain_dict(cfg: DictConfig) -> dict:
    """Resolved, with enums as their names; a missing mandatory key raises InvalidConfig naming it."""
    missing = sorted(_missing_keys(cfg))
    if missing:
        raise InvalidConfig([Problem((key,), "is required (no default); set it on the command line or in an experiment")
                             for key in missing])
    try:
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as e:  # e.g. an interpolation pointing at a missing key
        raise InvalidConfig([Problem((str(e.full_key),), "is required (no default)")]) from None
    return json.loads(json.dumps(container, default=_plain))


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


def load_resolved(path: str) -> dict:
    """The resolved config written into a job folder (config.yaml)."""
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # type: ignore[return-value]
