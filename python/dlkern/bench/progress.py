"""Progress on stderr: rich's bar, else a plain one; nothing when stderr is not a terminal."""

from __future__ import annotations

import sys


class Progress:
    def __init__(self, total: int, file=None):
        self.total, self.done = total, 0
        self.file = file or sys.stderr
        self.enabled = self.file.isatty()
        self._rich = None
        if self.enabled:
            try:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress
                from rich.progress import TextColumn, TimeElapsedColumn
            except ImportError:
                return
            self._rich = RichProgress(
                TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=Console(file=self.file), transient=True,
            )
            self._task = self._rich.add_task("", total=total)

    def __enter__(self):
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(self, *exc):
        if self._rich is not None:
            self._rich.stop()
        elif self.enabled:
            self.file.write("\r" + " " * 100 + "\r")
            self.file.flush()

    def start(self, description: str) -> None:
        """Say what runs now."""
        if self._rich is not None:
            self._rich.update(self._task, description=description)
        elif self.enabled:
            filled = 30 * self.done // max(self.total, 1)
            line = f"[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {description}"
            self.file.write("\r" + line[:99].ljust(99))
            self.file.flush()

    def advance(self) -> None:
        self.done += 1
        if self._rich is not None:
            self._rich.advance(self._task)
