"""The progress bar of the long commands (``send``, ``verify``, ``previews rebuild``)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, total: int, label: str, *, stream: TextIO | None = None) -> None:
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.done = 0
        self._drawn = 0.0

    @staticmethod
    def wanted(forced: bool) -> bool:
        """Whether to draw one: when asked (``--progress``) or when stderr is a terminal."""
        return forced or sys.stderr.isatty()

    def step(self, note: str = "") -> None:
        self.done += 1
        now = time.monotonic()
        if self.done == self.total or now - self._drawn >= 0.1:
            self._drawn = now
            self.draw(note)

    def draw(self, note: str = "") -> None:
        width = 30
        filled = width * self.done // self.total if self.total else width
        bar = "#" * filled + "-" * (width - filled)
        text = f"\r{self.label} [{bar}] {self.done}/{self.total} {note}"[:120]
        self.stream.write(text.ljust(121) if self.done < self.total else text + "\n")
        self.stream.flush()
