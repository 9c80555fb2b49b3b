"""What the command line prints, and how: one console, tables that fit 80 columns, and warnings and log
records as one readable line each (``warning: MESSAGE``), in a terminal and in a log file alike."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

#: soft_wrap: a long line stays one line in a log (a terminal wraps it itself); tables still fit the width.
#: markup off: names such as ``vit[seed=1]`` and paths print as they are; colour is asked for with ``markup=True``
console = Console(soft_wrap=True, markup=False)


def fitted_table(title: str, names: Sequence[str], numbers: Sequence[str] = ()) -> Table:
    """A table whose ``names`` columns (model, layer, block names) are never cut or wrapped and whose ``numbers``
    columns are right-aligned; when the table is wider than the console, the titles and headers wrap instead."""
    result = Table(title=Text(title), title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)  # room for columns
    for name in names:
        result.add_column(name, no_wrap=True, overflow="fold")
    for number in numbers:  # a header wraps between words, never inside one
        result.add_column(number, justify="right", overflow="fold", min_width=max(map(len, number.split()), default=1))
    return result


def one_line(text: Any) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(str(text).split())


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
    """:func:`warnings.showwarning` as one line, ``warning: MESSAGE``: no source path, no code line."""
    stream = file if file is not None else sys.stderr
    try:
        stream.write(f"warning: {one_line(message)}\n")
    except (OSError, ValueError):  # a closed or broken stream: a warning must never end the run
        pass


class LineFormatter(logging.Formatter):
    """Log records as one line: progress as is, everything else ``LEVEL: message``."""

    def format(self, record: logging.LogRecord) -> str:
        text = one_line(record.getMessage())
        if record.name == "seelike.progress":
            return text
        return f"{record.levelname.lower()}: {text}"


@contextmanager
def one_line_messages(verbose: bool = False) -> Iterator[None]:
    """For one command: Python warnings through :func:`show_warning`, log records through :class:`LineFormatter`
    on stderr (``seelike.progress`` always, the rest from WARNING, or INFO with ``verbose``); restored after."""
    handler = logging.StreamHandler()  # resolves sys.stderr when created: a test runner's captured stream too
    handler.setFormatter(LineFormatter())
    root, progress = logging.getLogger(), logging.getLogger("seelike.progress")
    saved = root.level, progress.level, warnings.showwarning
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    progress.setLevel(logging.INFO)  # progress lines in logs and CI, where no bar shows
    warnings.showwarning = show_warning
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        progress.setLevel(saved[1])
        warnings.showwarning = saved[2]
