"""Warnings as the command line shows them: one plain line each, `proxyless: warning: ...`,
without Python's file name, line number and source line, and each message once per run. Past
`MAX_SKIPPED_LINES` unreadable images, one line says that the rest are counted in each
epoch's line instead (a folder with thousands of broken files must not flood the terminal).
Library callers are untouched: the warnings keep their categories (`ProxylessWarning`,
`UnreadableImageWarning`) to filter on."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator

from proxyless.data.stream import UnreadableImageWarning

MAX_SKIPPED_LINES = 20


class WarningLines:
    """A `warnings.showwarning` that prints plain lines to stderr, each message once."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.skipped = 0

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())  # one line, whatever the message holds
        if text in self.seen:
            return
        self.seen.add(text)
        if issubclass(category, UnreadableImageWarning):
            self.skipped += 1
            if self.skipped > MAX_SKIPPED_LINES:
                if self.skipped == MAX_SKIPPED_LINES + 1:
                    self._print(f"more than {MAX_SKIPPED_LINES} unreadable images skipped; "
                                "each epoch's line counts them from here on")
                return
        self._print(text)

    @staticmethod
    def _print(text: str) -> None:
        print(f"proxyless: warning: {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def warning_lines() -> Iterator[WarningLines]:
    """Inside the block every warning shown is a plain line, once per message."""
    shown = WarningLines()
    with warnings.catch_warnings():
        warnings.simplefilter("always", UnreadableImageWarning)  # the printer keeps it once
        warnings.showwarning = shown
        yield shown
