"""Everything drawn for a person: rich progress bars on stderr and tables on stdout.

Only the CLI imports this module; the core reports progress through drtool.util.progress.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from drtool.util.units import format_bytes, format_rate


class RateColumn(ProgressColumn):
    """Documents per second and the byte rate they make (tasks count documents, not bytes)."""

    def render(self, task: Task) -> Text:
        return Text(rate_text(task.speed, task.completed, task.fields.get("bytes", 0)))


def rate_text(docs_per_second: float | None, docs: float, nbytes: int) -> str:
    """``"1,234 docs/s 5.6 MiB/s"``: the byte rate is the document rate times the mean size."""
    if not docs_per_second:
        return ""
    per_doc = nbytes / docs if docs else 0
    return f"{docs_per_second:,.0f} docs/s {format_rate(docs_per_second * per_doc)}"

# Piped output is not wrapped at all (a table keeps one line per row for grep and friends).
stdout = Console(soft_wrap=True, highlight=False, width=None if sys.stdout.isatty() else 100_000)
stderr = Console(stderr=True, soft_wrap=True, highlight=False)


class RichProgress:
    """drtool.util.progress.Progress drawn as one rich bar per task on stderr.

    Quiet (draws nothing) when ``quiet`` or when stderr is not a terminal."""

    def __init__(self, quiet: bool = False) -> None:
        self._bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("docs"),
            TextColumn("{task.fields[nbytes]}"),
            RateColumn(),
            TimeRemainingColumn(),
            console=stderr,
            transient=True,
            disable=quiet or not stderr.is_terminal,
        )
        self._tasks: dict[str, TaskID] = {}
        self._bytes: dict[str, int] = {}

    def __enter__(self) -> "RichProgress":
        self._bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self._bars.stop()

    def start(self, task: str, total: int | None) -> None:
        self._bytes[task] = 0
        self._tasks[task] = self._bars.add_task(task, total=total or None, nbytes="", bytes=0)

    def advance(self, task: str, docs: int, nbytes: int) -> None:
        self._bytes[task] += nbytes
        self._bars.update(self._tasks[task], advance=docs, bytes=self._bytes[task],
                          nbytes=format_bytes(self._bytes[task]))

    def note(self, task: str, message: str) -> None:
        self._bars.console.print(f"{task}: {message}")

    def finish(self, task: str) -> None:
        if task in self._tasks:
            self._bars.remove_task(self._tasks.pop(task))


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[object]],
                *, whole: Sequence[str] = ("id", "snapshot", "table", "time (UTC)")) -> None:
    """A table on stdout. Values are never cut: the columns in ``whole`` (values a user copies,
    such as snapshot ids) and numbers keep their full width and the other columns wrap; a
    terminal too narrow even for that gets one block of ``column value`` lines per row."""
    cells = [[str(v) for v in row] for row in rows]
    widths = [max([len(col)] + [len(row[i]) for row in cells]) for i, col in enumerate(columns)]
    kept = [i == 0 or col in whole or col.lower() in NUMERIC for i, col in enumerate(columns)]
    needed = sum(w if keep else _MIN_WRAPPED for w, keep in zip(widths, kept)) + len(columns) - 1
    if needed > stdout.width:
        _print_blocks(title, columns, cells)
        return
    table = Table(title=title, box=box.SIMPLE_HEAD, show_lines=False, header_style="bold",
                  padding=(0, 0), pad_edge=False, show_edge=False)
    for i, col in enumerate(columns):
        numeric = bool(i) and col.lower() in NUMERIC
        if kept[i]:
            table.add_column(col, justify="right" if numeric else "left", no_wrap=True,
                             min_width=widths[i])
        else:
            table.add_column(col, overflow="fold")
    for row in cells:
        table.add_row(*row)
    stdout.print(table)


_MIN_WRAPPED = 8  # the narrowest a wrapping column may become


def _print_blocks(title: str | None, columns: Sequence[str], cells: list[list[str]]) -> None:
    if title:
        stdout.print(title, markup=False)
    label = max(len(col) for col in columns[1:]) if len(columns) > 1 else 0
    for row in cells:
        stdout.print(row[0], markup=False)
        for col, value in zip(columns[1:], row[1:]):
            stdout.print(f"  {col:<{label}}  {value}", markup=False)


NUMERIC = {"documents", "stored", "new", "docs", "written", "conflicts", "bytes", "tables"}


def info(message: str) -> None:
    """A human message on stderr (stdout stays machine-readable)."""
    stderr.print(message)


def error(message: str) -> None:
    stderr.print(f"drtool: error: {message}", markup=False)
