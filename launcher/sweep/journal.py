"""The manifest's journal: manifest.journal.jsonl, one line appended per change of a point while a sweep runs.

Why a journal: rewriting manifest.jsonl (a temp file renamed over it) after each sbatch makes ext4 write
the file out at once (auto_da_alloc, on a rename over a file), the largest and noisiest part of a sweep's
own cost per point. Appending one line costs one write() into the page cache.

Format: each line is one complete point, with the keys a manifest.jsonl line has, ending in "\\n". The
points of a sweep are manifest.jsonl's, then each journal line in file order replaces the point with the
same overrides (order aside) or adds it: a point's last line wins. A line that does not parse (the torn
end of a write cut off by a crash) is skipped. Replaying the journal a second time over a manifest that
already holds it changes nothing, so a compaction (manifest.jsonl rewritten with the journal folded in,
then the journal deleted) leaves an accurate record whenever a crash cuts it.

The writers hold the manifest's lock (launcher.sweep.manifest); readers take no lock.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple, Optional

JOURNAL = "manifest.journal.jsonl"


class FileStamp(NamedTuple):
    """A file's identity at one moment: another inode, size or mtime means someone changed it."""

    inode: int
    size: int
    mtime_ns: int


def stamp_of(path: str | os.PathLike) -> Optional[FileStamp]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileStamp(st.st_ino, st.st_size, st.st_mtime_ns)


def point_key(overrides: list[str]) -> tuple[str, ...]:
    """A point's identity: its overrides, order aside."""
    return tuple(sorted(str(o) for o in overrides))


def parse_points(text: str) -> list[dict]:
    """The point records of a manifest or journal text, in file order; lines that are not one skipped."""
    points = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("overrides"), list):
            points.append(row)
    return points


def replay(points: list[dict], records: list[dict]) -> list[dict]:
    """`points` with each journal record, in order, replacing the point of the same overrides or added."""
    merged = {point_key(p["overrides"]): p for p in points}
    for record in records:
        merged[point_key(record["overrides"])] = record
    return list(merged.values())


class Journal:
    """manifest.journal.jsonl of one sweep folder. append() under the manifest's lock."""

    def __init__(self, sweep_dir: str | os.PathLike):
        self.path = Path(sweep_dir) / JOURNAL

    def records(self) -> list[dict]:
        """Every record, in the order they were appended (none when there is no journal)."""
        try:
            text = self.path.read_text()
        except OSError:
            return []
        return parse_points(text)

    def append(self, point: dict) -> str:
        """Add one point's record; returns its JSON line (the manifest reuses it when it folds the journal in)."""
        line = json.dumps(point) + "\n"
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)  # the umask decides, as for the manifest
        try:
            size = os.fstat(fd).st_size
            data = line.encode()
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # after a torn last line: this record starts a line of its own
            while data:  # one write() in practice; a reader that catches it half done skips the half line
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)
        return line

    def stamp(self) -> Optional[FileStamp]:
        return stamp_of(self.path)

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
