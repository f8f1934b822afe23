"""Composed Hydra config -> the plain dict every other layer reads."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from launcher.validate.rules import InvalidConfig, Problem


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
    return derive(json.loads(json.dumps(container, default=_plain)))


def derive(cfg: dict) -> dict:
    """Fill keys whose null means "follow the others": server.gpus_per_node = TP x DP / nodes (rounded up,
    so that a TP x DP that does not split over the nodes is reported by validation, naming the keys)."""
    server = cfg["server"]
    if server.get("gpus_per_node") is None:
        parts = (server["tensor_parallel_size"], server["data_parallel_size"], server["nodes"])
        if all(isinstance(v, int) and v > 0 for v in parts):
            tp, dp, nodes = parts
            server["gpus_per_node"] = -(-tp * dp // nodes)
        else:
            server["gpus_per_node"] = 1  # the bad count itself is what validation reports
    return cfg


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
