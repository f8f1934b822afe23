"""Slurm walltime strings <-> seconds (the formats sbatch --time accepts)."""

from __future__ import annotations

import re

_FORMATS = (
    # D-HH:MM:SS, D-HH:MM, D-HH
    (re.compile(r"^(\d+)-(\d{1,2}):(\d{1,2}):(\d{1,2})$"), lambda d, h, m, s: ((d * 24 + h) * 60 + m) * 60 + s),
    (re.compile(r"^(\d+)-(\d{1,2}):(\d{1,2})$"), lambda d, h, m: ((d * 24 + h) * 60 + m) * 60),
    (re.compile(r"^(\d+)-(\d{1,2})$"), lambda d, h: (d * 24 + h) * 3600),
    # HH:MM:SS, MM:SS, MM
    (re.compile(r"^(\d+):(\d{1,2}):(\d{1,2})$"), lambda h, m, s: (h * 60 + m) * 60 + s),
    (re.compile(r"^(\d+):(\d{1,2})$"), lambda m, s: m * 60 + s),
    (re.compile(r"^(\d+)$"), lambda m: m * 60),
)


def parse_walltime(text: str) -> int:
    """Seconds in a Slurm time string; ValueError when sbatch would not accept it."""
    value = str(text).strip()
    for pattern, to_seconds in _FORMATS:
        match = pattern.match(value)
        if match:
            return to_seconds(*(int(g) for g in match.groups()))
    raise ValueError(
        f"{text!r} is not a Slurm walltime (use minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)"
    )
