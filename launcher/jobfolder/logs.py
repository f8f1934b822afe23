"""Reading the components' logs: the last lines of a (possibly huge) log without reading all of it, the
root-cause line of a failure (the last exception a traceback ends with), and a failure's reason that leads
with that line and points to the full log.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

TAIL_BYTES = 64 * 1024  # enough for the last screenful of any log; a long run's log can be gigabytes
CAUSE_BYTES = 512 * 1024  # vLLM's chained tracebacks (worker, engine core, API server) run to ~40 KB
CAUSE_CHARS = 400  # a root-cause line longer than this is cut (one line in a terminal, a status line)

# What a line carries in front of the Python output it prints: vLLM's process tag "(EngineCore_DP0 pid=12) ",
# its logger's "ERROR 12-01 22:23:52 [core.py:1433] ", torch elastic's "[rank0]: ". Exactly one space goes
# with each, so that a traceback's indented frames stay indented.
_PREFIX = re.compile(r"^(?:\([\w.-]+ pid=\d+\) ?|\[rank\d+\]: ?|"
                     r"(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) \d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \[[^\]]*\] ?)+")
_TRACEBACK = "Traceback (most recent call last):"
# "ValueError: ...", "huggingface_hub.errors.LocalEntryNotFoundError: ...", a bare "KeyboardInterrupt"
_EXCEPTION = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?::(?: .*)?)?$")
# pydantic's "ValidationError: 1 validation error for ModelConfig" (vLLM's config checks): the reason follows
_PYDANTIC = re.compile(r"ValidationError: \d+ validation errors? for \w+$")
# exceptions that only say that something else failed: a launcher's, or vLLM's "see above"
_WRAPPER = re.compile(r"See root cause above|See stack trace for root cause|^subprocess\.CalledProcessError: "
                      r"Command .* returned non-zero exit status|ChildFailedError|^SystemExit\b|^KeyboardInterrupt\b")
# a line that says an error without a traceback: "[launcher.train] error: ...", "slurmstepd: error: ... oom_kill",
# python's "/usr/bin/python3: No module named launcher", bash's "trl: command not found"
_ERROR_LINE = re.compile(r"\b(?:error|fatal)\b|\w(?:Error|Exception): |No module named |command not found|"
                         r"Permission denied", re.I)
# srun's lines about its tasks ending: effects, never causes
_EFFECT_LINE = re.compile(r"^srun: (?:error: .*(?:task \d+: |Terminating)|Job step aborted|.*: task \d+: )"
                          r"|^slurmstepd: error: \*\*\* STEP .* (?:CANCELLED|KILLED)")


def tail_text(path: Path, limit: int = TAIL_BYTES, start: int = 0, end: Optional[int] = None) -> str:
    """The last `limit` bytes of the file (not before offset `start`, not after offset `end`: default its
    size), decoded; "" when it cannot be read."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END) if end is None else end
            f.seek(max(start, size - limit))
            return f.read(max(0, size - f.tell())).decode(errors="replace")
    except OSError:
        return ""


def tail_lines(path: Path, lines: int = 20, end: Optional[int] = None) -> list[str]:
    """The last non-empty lines of a log (of its first `end` bytes when given)."""
    return [line for line in tail_text(path, end=end).splitlines() if line.strip()][-lines:]


def tail(path: Path, lines: int = 20) -> str:
    """The last lines as one text, or "(no log)" when the file does not exist."""
    if not Path(path).exists():
        return "(no log)"
    return "\n".join(tail_lines(path, lines))


def _exception_lines(lines: list[str]) -> list[str]:
    """The line each traceback of the log ends with, in order."""
    found = []
    i = 0
    while i < len(lines):
        if lines[i].rstrip().endswith(_TRACEBACK):
            j = i + 1
            while j < len(lines) and (lines[j][:1] in (" ", "\t") or not lines[j].strip()):
                j += 1  # the frames (indented), and the carets under them
            if j < len(lines) and _EXCEPTION.match(lines[j].rstrip()):
                line = lines[j].rstrip()
                if _PYDANTIC.search(line) and j + 1 < len(lines) and lines[j + 1].strip():
                    line += ": " + lines[j + 1].strip()  # pydantic puts the reason on the next line
                found.append(line)
            i = j
        else:
            i += 1
    return found


def _cut(line: str) -> str:
    line = line.strip()
    return line if len(line) <= CAUSE_CHARS else line[:CAUSE_CHARS - 3] + "..."


def root_cause(log_text: str) -> Optional[str]:
    """The line that says why a component failed: the last exception a traceback of the log ends with,
    skipping the ones that only wrap another (accelerate's CalledProcessError, torch's ChildFailedError,
    vLLM's "Engine core initialization failed. See root cause above"); without a traceback, the last line
    that says error or fatal or names an ...Error (srun's lines about its tasks ending excepted); None when
    there is neither."""
    lines = [_PREFIX.sub("", line) for line in log_text.splitlines()]
    exceptions = _exception_lines(lines)
    causes = [line for line in exceptions if not _WRAPPER.search(line)] or exceptions
    if causes:
        return _cut(causes[-1])
    errors = [line for line in lines if _ERROR_LINE.search(line) and not _EFFECT_LINE.search(line.strip())]
    return _cut(errors[-1]) if errors else None


def reason_with_log(reason: str, log: Path, lines: int = 20) -> str:
    """A failure's reason as result.json records it: the first line is the reason, the log's root-cause line
    and where the full log is; the further lines are the log's last lines."""
    cause = root_cause(tail_text(log, CAUSE_BYTES)) if Path(log).exists() else None
    first = f"{reason}: {cause}" if cause else reason
    return f"{first} (full log: {log})\nlast lines of {Path(log).name}:\n{tail(log, lines)}"
