"""Tables for people: rich on a terminal, aligned plain text (no ANSI codes) when piped."""

from __future__ import annotations

import sys
from typing import Optional, Sequence


def console(stream=None):
    from rich.console import Console

    return Console(file=stream or sys.stdout, force_terminal=None, highlight=False, soft_wrap=False)


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]], title: Optional[str] = None,
                stream=None) -> None:
    """A rich table on a terminal; aligned plain text otherwise (pipes, files: no ANSI codes)."""
    con = console(stream)
    if con.is_terminal:
        from rich.table import Table

        table = Table(title=title, title_justify="left", show_lines=False)
        for index, name in enumerate(columns):
            table.add_column(name, overflow="fold", no_wrap=index == 0)
        for row in rows:
            table.add_row(*[str(c) for c in row])
        con.print(table)
        return
    out = stream or sys.stdout
    cells = [[" ".join(str(c).split()) for c in row] for row in rows]
    widths = [max([len(columns[i])] + [len(r[i]) for r in cells]) for i in range(len(columns))]
    if title:
        print(title, file=out)

    def line(values):
        return "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()

    print(line(columns), file=out)
    for row in cells:
        print(line(row), file=out)
    out.flush()
