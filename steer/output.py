"""How the user CLI prints: JSON for scripts, tables and records for people, one-line errors.

Ids are never cut. On a terminal a table is fitted to its width by folding the other columns;
an id column keeps its full width even when that makes the table wider than the terminal. When
stdout is not a terminal a table is plain text: a header line, then one line per row, columns
aligned with spaces, nothing wrapped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

# The narrowest a folded column gets on a narrow terminal.
MIN_FOLDED_WIDTH = 4
GAP = "  "


@dataclass(frozen=True)
class Column:
    header: str
    is_id: bool = False  # never wrapped, folded or ellipsized


def print_json(console: Console, data: Any) -> None:
    """One JSON document on stdout, as the API returned it (no colour, no wrapping)."""
    console.file.write(json.dumps(data, indent=2) + "\n")
    console.file.flush()


def print_table(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> None:
    if not console.is_terminal:
        _print_aligned(console, [[c.header for c in columns], *rows])
        return
    widths = _fitted_widths(console.width, columns, rows)
    table = Table(width=sum(widths) + _table_overhead(len(columns)))
    for column, width in zip(columns, widths, strict=True):
        table.add_column(
            column.header,
            width=width,
            no_wrap=column.is_id,
            overflow="ignore" if column.is_id else "fold",
        )
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    console.print(table, crop=False)


def print_record(console: Console, fields: Sequence[tuple[str, str]]) -> None:
    """An object's fields for people: ``name  value`` lines, empty values left out."""
    _print_aligned(console, [[name, value] for name, value in fields if value])


def say(console: Console, label: str, text: str) -> None:
    """``label`` (rich markup) then ``text`` (shown as it is), never wrapped."""
    console.print(f"{label}{escape(text)}", soft_wrap=True, highlight=False)


def unix_time(value: int | None) -> str:
    if not value:
        return ""
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table_overhead(n_columns: int) -> int:
    """Box edges, column separators and one space of padding each side of every cell."""
    return 3 * n_columns + 1


def _fitted_widths(
    total: int, columns: Sequence[Column], rows: Sequence[Sequence[str]]
) -> list[int]:
    """Each column's content width: ids at their longest; the rest share what is left, the
    narrowest first (water-filling), each at least MIN_FOLDED_WIDTH (or its own width): below
    that, the table grows wider than the terminal instead."""
    natural = [
        max([cell_len(column.header), *(cell_len(row[i]) for row in rows)])
        for i, column in enumerate(columns)
    ]
    widths = list(natural)
    flexible = sorted((i for i, c in enumerate(columns) if not c.is_id), key=lambda i: natural[i])
    fixed = sum(natural[i] for i, c in enumerate(columns) if c.is_id)
    room = total - _table_overhead(len(columns)) - fixed
    for k, i in enumerate(flexible):
        share = room // (len(flexible) - k)
        widths[i] = min(natural[i], max(share, MIN_FOLDED_WIDTH))
        room -= widths[i]
    return widths


def _print_aligned(console: Console, lines: Sequence[Sequence[str]]) -> None:
    if not lines:
        return
    widths = [max(cell_len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        cells = [
            cell + " " * (width - cell_len(cell)) for cell, width in zip(line, widths, strict=True)
        ]
        console.file.write(GAP.join(cells).rstrip() + "\n")
    console.file.flush()
