"""Each sweep point's typed LaunchConfig, with OmegaConf's conversion run once per group of like points.

Typing a composed config (launcher.config.compose: the missing/unknown-key checks, then
`OmegaConf.to_object`, which resolves every node) costs ~3-5 ms, most of a point's own cost. The points
of one group (launcher.sweep.points: the same config-group choices, the same value keys set) differ only
in the values of those keys, so the first point of a group is typed in full and kept (before derive) as
the group's template; a later point is a copy of the template with its own values, read back from its
DictConfig (so OmegaConf's own conversions apply: "2" -> 2, "cpu" -> Device.cpu), then derived.

That copy is exact only where no other value depends on the swept keys. So the fast way is taken only
when every interpolation of the group's config reads an environment variable (`${oc.env:...}`) or a
key that overlaps neither a swept key nor another interpolation, every swept key names an existing
scalar field or mapping entry of the template, and the point's value is neither `???` nor an
interpolation. Any other point is typed in full, as before (launch() does it, with its errors).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf

from launcher.config.compose import to_typed
from launcher.config.derive import derive
from launcher.config.schema import LaunchConfig

_INTERPOLATION = re.compile(r"\$\{([^${}]*)")
_KEY = re.compile(r"^[A-Za-z_]\w*(\.\w+)*$")
_UNSET = object()


def _overlap(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _interpolations(node: Any, path: str = "") -> list[tuple[str, str]]:
    """(key, text) of every string holding `${` in a raw (unresolved) container."""
    if isinstance(node, dict):
        return [found for k, v in node.items() for found in _interpolations(v, f"{path}{k}.")]
    if isinstance(node, list):
        return [found for i, v in enumerate(node) for found in _interpolations(v, f"{path}{i}.")]
    return [(path[:-1], node)] if isinstance(node, str) and "${" in node else []


def independent_of(config: DictConfig, keys: tuple[str, ...]) -> bool:
    """Whether no value of `config` can change with `keys` (the conservative test of the module docstring)."""
    found = _interpolations(OmegaConf.to_container(config, resolve=False))
    holders = tuple(path for path, _ in found)
    if any(_overlap(h, k) for h in holders for k in keys):
        return False
    for path, text in found:
        if "\\${" in text:
            return False
        for inner in _INTERPOLATION.findall(text):
            if inner.startswith("oc.env:"):
                continue
            if not _KEY.match(inner) or any(_overlap(inner, k) for k in keys + holders):
                return False
    return True


def _parent(typed: Any, key: str) -> tuple[Any, str]:
    """The object holding `key`'s last part, and that part; raises KeyError/AttributeError when absent."""
    *path, last = key.split(".")
    node = typed
    for part in path:
        node = node[part] if isinstance(node, dict) else getattr(node, part) if dataclasses.is_dataclass(node) else None
        if node is None:
            raise KeyError(key)
    return node, last


def _get(parent: Any, name: str) -> Any:
    if isinstance(parent, dict):
        return parent.get(name, _UNSET)
    if dataclasses.is_dataclass(parent) and name in {f.name for f in dataclasses.fields(parent)}:
        return getattr(parent, name)
    return _UNSET


def _settable(template: Any, key: str) -> bool:
    try:
        parent, name = _parent(template, key)
    except (KeyError, AttributeError, TypeError):
        return False
    value = _get(parent, name)
    return value is not _UNSET and not (dataclasses.is_dataclass(value) or isinstance(value, (dict, list)))


class TypedPoints:
    """`typed(group, values, cfg)`: the point's LaunchConfig (derived), or None when it is to be typed in full
    by launch(). `group`: the point's group (any hashable); `values`: the (key, value, add) its overrides
    set, the same keys for every point of the group (None: composed on its own); `cfg`: its DictConfig
    with those values set."""

    def __init__(self) -> None:
        self._templates: dict[Any, Optional[LaunchConfig]] = {}  # None: the group is typed in full
        self.copied = 0  # points typed by copying their group's template

    def typed(self, group: Any, values: Optional[list], cfg: DictConfig) -> Optional[LaunchConfig]:
        if values is None or any(isinstance(v, str) and ("${" in v or v == "???") for _, v, _ in values):
            return None
        keys = tuple(sorted(k for k, _, _ in values))
        if group not in self._templates:
            return self._first(group, keys, cfg)
        template = self._templates[group]
        if template is None:
            return None
        read = []
        for key in keys:  # as OmegaConf converted it for the field ("2" -> 2, "cpu" -> Device.cpu)
            value = OmegaConf.select(cfg, key, default=_UNSET, throw_on_missing=False)
            if value is _UNSET or isinstance(value, (DictConfig, ListConfig)):
                return None
            read.append((key, value))
        point = copy.deepcopy(template)
        try:
            for key, value in read:
                parent, name = _parent(point, key)
                if isinstance(parent, dict):
                    parent[name] = value
                else:
                    setattr(parent, name, value)
            point = derive(point)
        except Exception:  # noqa: BLE001 - launch() types it in full and reports what is wrong
            return None
        self.copied += 1
        return point

    def _first(self, group: Any, keys: tuple[str, ...], cfg: DictConfig) -> Optional[LaunchConfig]:
        """Typed in full; kept as the group's template when the group qualifies (None: launch() types it, so
        that an invalid point is reported as before)."""
        try:
            typed = to_typed(cfg)
        except Exception:  # noqa: BLE001 - launch() types it again and reports it
            return None
        usable = independent_of(cfg, keys) and all(_settable(typed, k) for k in keys)
        self._templates[group] = copy.deepcopy(typed) if usable else None
        return derive(typed)
