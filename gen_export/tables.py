"""The one table style of genexport's output: readable in an 80-column terminal.

No vertical rules, two spaces between columns, one line per row: a cell too long for its column is cut
with an ellipsis, never wrapped onto a second line (tests/test_tables.py renders every table at width 80).
Only rich is imported, so the CLI can use it before any command runs.
"""

from __future__ import annotations

from rich import box
from rich.table import Table


def compact_table(title: str, *columns: str, right: tuple[str, ...] = (),
                  max_widths: dict[str, int] | None = None) -> Table:
    """A table with these column headers; `right` ones are right-aligned (numbers)."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left", no_wrap=True, overflow="ellipsis",
                         max_width=(max_widths or {}).get(column))
    return table
