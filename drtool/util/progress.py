"""How core operations report progress without knowing about terminals.

The CLI passes an implementation that draws rich progress bars; a long-running runner can pass
one that updates metrics. The default does nothing.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, task: str, total: int | None) -> None:
        """A unit of work (usually a table) starts; ``total`` documents expected, if known."""

    def advance(self, task: str, docs: int, nbytes: int) -> None:
        """``docs`` more documents (``nbytes`` bytes of text) were processed."""

    def note(self, task: str, message: str) -> None:
        """Something worth telling the operator happened (re-read after overflow, ...)."""

    def finish(self, task: str) -> None:
        """The unit of work ended (successfully or not)."""


class NullProgress:
    def start(self, task: str, total: int | None) -> None:
        pass

    def advance(self, task: str, docs: int, nbytes: int) -> None:
        pass

    def note(self, task: str, message: str) -> None:
        pass

    def finish(self, task: str) -> None:
        pass
