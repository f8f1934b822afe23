#!/usr/bin/env python3
"""Dump the fields of TRL's GRPOConfig to launcher/grpo_fields.json.

    python scripts/gen_grpo_fields.py            # (re)write launcher/grpo_fields.json
    python scripts/gen_grpo_fields.py --check    # exit 1 if the file is stale for the installed TRL
    python scripts/gen_grpo_fields.py --out -    # print to stdout

Needs TRL installed (the train extra). The launcher reads the JSON on the login node, where TRL is
not installed, to reject unknown `grpo.*` keys and values of the wrong type before submitting.

Output:

    {"trl_version": "1.16.0", "transformers_version": "...", "generated_by": "...",
     "type_grammar": "...",
     "fields": {"<name>": {"type": "<type>", "default": <JSON value or null>,
                           ["required": true,] ["item": "<type>",] ["choices": [...]]}, ...}}

`type` is one of the base types  int | float | bool | str | list | dict | any
or T1|T2|... (any of them) or optional[T] (T or None; T is a base type or a union).
`item` gives the element type of a list, where known; `choices` lists the accepted values of
an enum-typed field (transformers turns such strings into the enum and rejects others).
`default` is the dataclass default (before __post_init__: e.g. bf16's default is null, which
TRL turns into True unless fp16 is set).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import sys
import types
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "launcher" / "grpo_fields.json"
BASE_TYPES = {int: "int", float: "float", bool: "bool", str: "str"}
TYPE_GRAMMAR = (
    "base types int, float, bool, str, list, dict, any; 'T1|T2' = any of them; optional[T] = T or null; "
    "an int is a valid float; 'item' = list element type; "
    "'choices' / 'item_choices' = accepted enum values of the field / of its list items"
)


def _flatten(tp) -> list:
    """Members of a (possibly nested) union, or [tp]."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(tp) for m in _flatten(a)]
    return [tp]


def describe(tp) -> dict:
    """{"type": ..., optional "item": ..., optional "choices": [...]} for a type annotation."""
    members = _flatten(tp)
    optional = type(None) in members
    parts: list[str] = []
    info: dict = {}
    for m in members:
        if m is type(None):
            continue
        origin, args = typing.get_origin(m), typing.get_args(m)
        if m in BASE_TYPES:
            name = BASE_TYPES[m]
        elif origin is typing.Literal:
            for value in args:
                name = BASE_TYPES.get(type(value), "any")
                if name not in parts:
                    parts.append(name)
            continue
        elif isinstance(m, type) and issubclass(m, enum.Enum):
            values = [e.value for e in m]
            info.setdefault("choices", [])
            info["choices"] += [v for v in values if v not in info["choices"]]
            name = BASE_TYPES.get(type(values[0]), "any") if values else "any"
        elif m in (list, tuple, set) or origin in (list, tuple, set, typing.Sequence):
            name = "list"
            if args and len(set(args) - {Ellipsis}) == 1:
                item = describe(args[0])
                info["item"] = item["type"]
                if "choices" in item:
                    info["item_choices"] = item["choices"]
        elif m is dict or origin is dict:
            name = "dict"
        else:  # typing.Any, accelerate's ParallelismConfig, other objects
            name = "any"
        if name not in parts:
            parts.append(name)
    if "any" in parts:
        parts = ["any"]
    inner = "|".join(parts)
    info["type"] = f"optional[{inner}]" if optional and inner != "any" else inner
    return {"type": info.pop("type"), **info}


def jsonable_default(field: dataclasses.Field) -> tuple[object, bool]:
    """(default, required)."""
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = field.default_factory()  # type: ignore[misc]
    else:
        return None, True
    if isinstance(value, enum.Enum):
        value = value.value
    try:
        json.dumps(value)
    except TypeError:
        value = repr(value)
    return value, False


def generate() -> dict:
    import transformers
    import trl
    from trl import GRPOConfig

    try:
        hints = typing.get_type_hints(GRPOConfig)
    except Exception:  # noqa: BLE001 - fall back to the raw annotations
        hints = {}
    fields = {}
    for f in dataclasses.fields(GRPOConfig):
        if not f.init:
            continue
        entry = describe(hints.get(f.name, f.type))
        default, required = jsonable_default(f)
        entry = {"type": entry.pop("type"), "default": default, **entry}
        if required:
            entry["required"] = True
        fields[f.name] = entry
    return {
        "trl_version": trl.__version__,
        "transformers_version": transformers.__version__,
        "generated_by": "scripts/gen_grpo_fields.py",
        "type_grammar": TYPE_GRAMMAR,
        "fields": dict(sorted(fields.items())),
    }


def render(data: dict) -> str:
    # one field per line: compact, yet diffs stay readable
    lines = ["{"]
    for key in ("trl_version", "transformers_version", "generated_by", "type_grammar"):
        lines.append(f"  {json.dumps(key)}: {json.dumps(data[key])},")
    lines.append('  "fields": {')
    items = list(data["fields"].items())
    for i, (name, entry) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        lines.append(f"    {json.dumps(name)}: {json.dumps(entry, sort_keys=False)}{comma}")
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output path, or - for stdout (default: %(default)s)")
    ap.add_argument("--check", action="store_true", help="only compare with --out; exit 1 if it differs")
    args = ap.parse_args(argv)
    text = render(generate())
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    if args.check:
        current = out.read_text() if out.exists() else ""
        if current != text:
            print(f"{out} is stale for the installed TRL; run scripts/gen_grpo_fields.py", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    n = text.count('"type":')
    print(f"wrote {out}: {n} fields of GRPOConfig (trl {json.loads(text)['trl_version']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
