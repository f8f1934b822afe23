"""A sweep's points: the cartesian product of the command line's sweeps, and each point's config.

Hydra would compose every point from scratch, twice (~70 ms each: the sweeper composes the whole
batch to fail early, the launcher composes each point again). Most sweeps only change values
(`server.tensor_parallel_size=1,2,4`), which cannot change what the defaults list composes. So:

- Hydra composes once per distinct choice of config groups (`+experiment=a,b`, `cluster=slurm,local`);
  with no group swept there is no extra composition at all: the sweep's own config (Hydra's
  multirun config, which has every non-swept override applied) is the base.
- a point's value overrides are set on that base with OmegaConf, as Hydra's own override does
  (`key=v` must exist, `+key=v` must not, `++key=v` either way), and the same base is handed out
  for the next point with that point's values set in turn.
- every point's values are set once before anything is submitted: an override that cannot apply
  (a wrong type, an unknown key) makes Hydra compose that point, which fails the sweep with Hydra's
  own message, as Hydra's up-front check did.
- a point whose overrides do not fit the fast path (a deletion, a list or dict value, a package,
  an interpolation of `${hydra:...}` in the config) is composed by Hydra on its own.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

GroupKey = tuple[str, ...]
Assignment = tuple[str, Any, bool]  # (key, value, add): add when the override was +key= or ++key=

KEEP_BASES = 64  # composed bases kept for reuse; a sweep over more group choices composes again


def expand(arguments: list[str], config_loader=None) -> list[list[str]]:
    """Every point's override list, in order: the cartesian product of the sweeps (`a=1,2`, `range()`,
    `glob()`), each override written `key=value`. A key given twice keeps its first place, last value."""
    parser = OverridesParser.create(config_loader=config_loader)
    choices: dict[str, list[str]] = {}
    for override in parser.parse_overrides(arguments):
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise HydraException(f"{key}: an interval cannot be swept (use a list or range())")
    return [list(point) for point in itertools.product(*choices.values())]


def _uses_hydra_resolver(node: Any) -> bool:
    if isinstance(node, dict):
        return any(_uses_hydra_resolver(v) for v in node.values())
    if isinstance(node, list):
        return any(_uses_hydra_resolver(v) for v in node)
    return isinstance(node, str) and "${hydra:" in node.replace(" ", "")


def task_config(config: DictConfig) -> DictConfig:
    """A composed config without its `hydra` node, as Hydra hands it to the task (in place)."""
    with read_write(config), open_dict(config):
        if "hydra" in config:
            del config["hydra"]
    return config


class PointConfigs:
    """Each point's task config, composed by Hydra only where a config group changes.

    `get(i)` returns point i's config; a point of the same group choice gets the same object with
    its own values set, so a config is valid until the next `get()`."""

    def __init__(self, config_loader, master: DictConfig, points: list[list[str]], first_index: int = 0):
        self.loader = config_loader
        self.first_index = first_index
        self.master = master
        self.points = [list(p) for p in points]
        self.parser = OverridesParser.create(config_loader=config_loader)
        self._parsed: dict[str, Override] = {}
        self._groups: dict[str, set[str]] = {}  # parent group -> its child groups (the loader is asked once each)
        self.compositions = 0  # how many times Hydra composed
        self._bases: dict[GroupKey, DictConfig] = {}
        self._unusable: set[GroupKey] = set()  # groups whose config interpolates ${hydra:...}
        self._assignments: list[Optional[list[Assignment]]] = []  # None: Hydra composes the point
        self._group_of: list[GroupKey] = []
        self._group_keys: dict[GroupKey, tuple[str, ...]] = {}  # the value keys every point of a group sets
        self._addable: dict[tuple[GroupKey, str], bool] = {}
        applied = {}
        for text in OmegaConf.to_container(master.hydra.overrides.task, resolve=False):
            override = self._parse(str(text))
            if not override.is_sweep_override():
                applied[override.get_key_element()] = override
        self._applied = applied  # already in the sweep's own config
        for overrides in self.points:
            self._plan(overrides)
        self._check()

    # ----------------------------------------------------------------------------- planning

    def _parse(self, text: str) -> Override:
        override = self._parsed.get(text)
        if override is None:
            override = self._parsed[text] = self.parser.parse_override(text)
        return override

    def _is_group(self, override: Override) -> bool:
        """A config group choice (or a deletion, or a package): what changes the defaults list."""
        key = override.key_or_group
        if override.is_delete() or override.package is not None or override.is_hydra_override():
            return True
        if "." in key:  # a config path (`server.nodes`); groups are written with "/"
            return False
        parent, _, name = key.rpartition("/")
        if parent not in self._groups:
            self._groups[parent] = set(self.loader.list_groups(parent))
        return name in self._groups[parent]

    def _plan(self, overrides: list[str]) -> None:
        group: list[str] = []
        values: list[Assignment] = []
        added: list[str] = []
        fits = True
        for text in overrides:
            override = self._parse(text)
            same = self._applied.get(override.get_key_element())
            if same is not None and same.value() == override.value():
                continue
            value = override.value()
            if self._is_group(override):
                group.append(text)
            elif isinstance(value, (dict, list)) or override.is_sweep_override():
                fits = False
            else:
                values.append((override.key_or_group, value, override.is_add() or override.is_force_add()))
                if override.is_add():
                    added.append(override.key_or_group)
        key = tuple(group)
        # `+key=v` onto an existing value: Hydra refuses it, so Hydra is left to say so
        fits = fits and all(self._add_allowed(key, k) for k in added)
        keys = tuple(sorted(k for k, _, _ in values))
        if fits and self._group_keys.setdefault(key, keys) != keys:
            fits = False  # not the same keys as the group's other points: composed on its own
        self._group_of.append(key)
        self._assignments.append(values if fits else None)

    def _add_allowed(self, group: GroupKey, key: str) -> bool:
        if (group, key) not in self._addable:
            base = self._base(group)
            self._addable[(group, key)] = (
                base is not None and OmegaConf.select(base, key, throw_on_missing=False,
                                                      throw_on_resolution_failure=False) is None)
        return self._addable[(group, key)]

    def _base(self, group: GroupKey) -> Optional[DictConfig]:
        """The composed config the group's points start from (None: every point composed on its own)."""
        if group in self._bases or group in self._unusable:
            return self._bases.get(group)
        if not group:
            config = copy.deepcopy(self.master)
            OmegaConf.copy_cache(from_config=self.master, to_config=config)
        else:
            config = self.loader.load_sweep_config(self.master, list(self._group_overrides(group)))
            self.compositions += 1
        config = task_config(config)
        if _uses_hydra_resolver(OmegaConf.to_container(config, resolve=False)):
            self._unusable.add(group)  # ${hydra:job.num} and the like differ per point: Hydra composes each
            return None
        if len(self._bases) < KEEP_BASES:
            self._bases[group] = config
        return config

    def _group_overrides(self, group: GroupKey) -> list[str]:
        """The overrides that compose the group's base: the non-swept ones and the group choices."""
        return [o for o in self.master_overrides() if not self._parse(o).is_sweep_override()] + list(group)

    def master_overrides(self) -> list[str]:
        return [str(o) for o in OmegaConf.to_container(self.master.hydra.overrides.task, resolve=False)]

    def _check(self) -> None:
        """Set every point's values once, before anything is submitted; what does not apply is composed
        by Hydra now (and fails the sweep with Hydra's message)."""
        for i, values in enumerate(self._assignments):
            base = self._base(self._group_of[i]) if values is not None else None
            if values is not None and base is not None:
                try:
                    _assign(base, values)
                    continue
                except Exception:  # noqa: BLE001 - Hydra composes it below and names the problem
                    pass
            self._assignments[i] = None
            self._compose(i)

    # ----------------------------------------------------------------------------- handing out

    def __len__(self) -> int:
        return len(self.points)

    def composed_alone(self) -> int:
        """How many points Hydra composes on their own."""
        return sum(1 for a in self._assignments if a is None)

    def values(self, i: int) -> Optional[list[Assignment]]:
        """The (key, value, add) point i sets on its group's base (None: Hydra composes it on its own)."""
        return self._assignments[i]

    def group(self, i: int) -> GroupKey:
        return self._group_of[i]

    def get(self, i: int) -> DictConfig:
        values = self._assignments[i]
        if values is None:
            return self._compose(i)
        base = self._base(self._group_of[i])
        assert base is not None
        _assign(base, values)
        return base

    def _compose(self, i: int) -> DictConfig:
        config = self.loader.load_sweep_config(self.master, list(self.points[i]))
        self.compositions += 1
        with open_dict(config):  # as Hydra's own launcher numbers its jobs
            config.hydra.job.id = self.first_index + i
            config.hydra.job.num = self.first_index + i
        HydraConfig.instance().set_config(config)  # for ${hydra:...} in the point's config
        return task_config(config)


def _assign(config: DictConfig, values: list[Assignment]) -> None:
    for key, value, add in values:
        OmegaConf.update(config, key, value, merge=True, force_add=add)
