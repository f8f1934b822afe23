#!/usr/bin/env python3
"""Write docs/configuration.md from launcher/config/schema.py: every key, its type, default and meaning.

The meaning is the trailing comment of the field in schema.py; tests/test_docs.py fails when the page
is out of date (run this script to refresh it).
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import sys
import typing
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launcher.config import schema  # noqa: E402

SECTIONS = [("", schema.LaunchConfig), ("server", schema.ServerConfig), ("trainer", schema.TrainerConfig),
            ("model", schema.ModelConfig), ("model.lora", schema.LoraConfig),
            ("data", schema.DataConfig), ("reward", schema.RewardConfig), ("tracking", schema.TrackingConfig),
            ("cluster", schema.ClusterConfig), ("cluster.container", schema.ContainerConfig)]


def field_comments() -> dict[tuple[str, str], str]:
    """(class name, field name) -> the comment at the end of its line in schema.py."""
    source = (REPO / "launcher" / "config" / "schema.py").read_text()
    lines = source.splitlines()
    comments = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    text = " ".join(lines[item.lineno - 1:item.end_lineno])
                    if "#" in text:
                        comments[(node.name, item.target.id)] = text.split("#", 1)[1].strip()
    return comments


def type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{type_name(args[0])} or null"
    if origin in (list, typing.List):
        return f"list of {type_name(typing.get_args(tp)[0])}"
    if origin in (dict, typing.Dict):
        return "mapping"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " \\| ".join(m.value for m in tp)
    return getattr(tp, "__name__", str(tp))


def default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return "(required)"
    if isinstance(value, enum.Enum):
        value = value.value
    if value == "???":
        return "(required)"
    return "`null`" if value is None else f"`{value}`"


def render() -> str:
    comments = field_comments()
    out = ["# Configuration keys", "",
           "Generated from `launcher/config/schema.py` by `scripts/gen_config_docs.py`; do not edit by hand.", "",
           "Set any key on the command line (`server.tensor_parallel_size=2`), in an experiment file",
           "(`conf/experiment/*.yaml`), or pick a group (`cluster=local`). Unknown keys and wrong types fail",
           "when the config is composed; so does a key added with `+` to a section other than the open mappings",
           "(`grpo`, `*.env`, `*.sbatch`). The defaults below are the schema's; the groups in `conf/` and the",
           "experiments override some of them (see `python -m launcher +experiment=NAME dry_run=true`).", ""]
    hints = typing.get_type_hints
    for prefix, cls in SECTIONS:
        out += [f"## `{prefix or 'top level'}`", ""]
        doc = inspect.cleandoc(cls.__doc__ or "")
        if doc and not doc.startswith(cls.__name__ + "("):
            out += [doc, ""]
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        types = hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(types[f.name]):
                continue  # a section of its own
            key = f"{prefix}.{f.name}" if prefix else f.name
            meaning = comments.get((cls.__name__, f.name), "")
            if f.name == "grpo":
                meaning = ("any field of `trl.GRPOConfig` (checked against `launcher/grpo_fields.json`); "
                           "defaults in `conf/grpo/default.yaml`; add one with `+grpo.<field>=...`")
            out.append(f"| `{key}` | {type_name(types[f.name])} | {default_of(f)} | {meaning} |")
        out.append("")
    out += ["## Exit codes", "", "| code | meaning |", "|---|---|",
            "| 0 | submitted (Slurm), finished (local), or dry-run printed |",
            "| 1 | a Hydra composition error (unknown key, wrong type), a submission error, or a failed local job |",
            "| 2 | invalid configuration (also a missing mandatory key, or a `+key` the schema lacks): the message "
            "names the key(s) to change; nothing was submitted |",
            "| 130 | a local job stopped by Ctrl-C / SIGTERM |", ""]
    return "\n".join(out)


def main() -> None:
    target = REPO / "docs" / "configuration.md"
    target.write_text(render())
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
