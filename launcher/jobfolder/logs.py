"""Reading the components' logs: the last lines of a (possibly huge) log, without reading all of it."""

from __future__ import annotations

import os
from pathlib import Path

TAIL_BYTES = 64 * 1024  # enough for the last screenful of any log; a long run's log can be gigabytes


def tail_text(path: Path, limit: int = TAIL_BYTES, start: int = 0) -> str:
    """The last `limit` bytes of the file (not before offset `start`), decoded; "" when it cannot be read."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(start, size - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def tail_lines(path: Path, lines: int = 20) -> list[str]:
    """The last non-empty lines of a log."""
    return [line for line in tail_text(path).splitlines() if line.strip()][-lines:]


def tail(path: Path, lines: int = 20) -> str:
    """The last lines as one text, or "(no log)" when the file does not exist."""
    if not Path(path).exists():
        return "(no log)"
    return "\n".join(tail_lines(path, lines))
