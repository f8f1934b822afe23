"""JSON files of a job folder: strict JSON (no NaN), tolerant of numpy/torch scalars, written atomically.
Standard library only: the login node and every in-job process import this module."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


def _json_default(value: Any) -> Any:
    """Numbers from numpy/torch (anything with .item()), paths and sets; repr for the rest."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)


def _clean(value: Any) -> Any:
    """NaN/inf -> None (strict JSON readers reject them), recursively."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def dumps(obj: Any, **kwargs: Any) -> str:
    """Strict JSON (no NaN), tolerant of numpy/torch scalars."""
    return json.dumps(_clean(obj), default=_json_default, allow_nan=False, **kwargs)


def write_json_atomic(path: PathLike, obj: Any, durable: bool = False) -> None:
    """Write JSON to a temp file in the same folder, then rename over `path`: readers never see half a
    file. `durable` also fsyncs first (for records that must survive a node crash, like checkpoint.done);
    heartbeats skip it, since they are rewritten several times per training step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(dumps(obj, indent=2))
            f.write("\n")
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_json(path: PathLike) -> Optional[Any]:
    """The parsed file, or None when it is missing, empty or not valid JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
