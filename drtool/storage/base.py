"""The storage interface: a flat namespace of immutable, named objects.

Every backend (memory, local directory, SFTP, S3) implements ``Storage``; cross-cutting concerns
(retry with backoff, bandwidth limits) are wrappers that implement it too and are stacked in
one place, ``drtool.storage.open_storage``. One contract suite (tests/storage_contract.py)
runs against every backend and wrapper.

Names are '/'-separated paths of ``[A-Za-z0-9._-]`` parts, e.g. ``data/ab/ab12...``; a part
never starts with '.' (backends use dot-names for temporary files, which ``list`` never
shows). Backends never interpret names beyond that.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

from drtool.errors import UsageError

_NAME_PART = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid object name, else raise UsageError."""
    parts = name.split("/")
    if not name or not all(_NAME_PART.match(p) for p in parts):
        raise UsageError(f"invalid object name {name!r}")
    return name


@dataclass(frozen=True)
class ObjectInfo:
    """An object's name and size; ``stat`` of a backend that knows them also gives the time
    it was written and the end of its Object Lock retention (else None; not compared)."""

    name: str
    size: int
    modified: datetime | None = field(default=None, compare=False)
    retain_until: datetime | None = field(default=None, compare=False)


class Storage(ABC):
    """Immutable named objects.

    Contract (all backends, checked by the storage contract suite):

    * ``put`` is atomic and write-once: a concurrent or later reader sees either no object or
      the whole object, never a part of it. Putting a name that exists with the same content
      is a no-op; with different content it raises ObjectExists and leaves the existing object
      untouched (a backend may detect "different" by size only).
    * ``get``, ``stat`` raise ObjectNotFound for a missing name; ``delete`` of a missing name
      succeeds (idempotent), so prune can be re-run after an interruption.
    * ``list(prefix)`` yields every complete object whose name starts with ``prefix``, in no
      particular order, never temporary or partial objects.
    * Failures that may succeed later (network drop, timeout) raise StorageUnreachable
      (retryable); permanent ones (permission denied, disk full, auth) raise StorageError or
      AuthError (not retryable). No backend-specific exception escapes.
    * Methods are coroutines and may be called concurrently from one event loop.
    """

    #: A human-readable location for messages, e.g. ``file:///srv/backup``. Never a secret.
    location: str = ""
    #: Seconds of Object Lock retention every new object gets (s3:// with object_lock), else
    #: None. With it ``delete`` raises ObjectRetained for an object still under retention.
    retention: float | None = None

    @abstractmethod
    async def put(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name`` atomically (see the class contract)."""

    @abstractmethod
    async def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Return the object's bytes, or ``length`` bytes from ``offset`` (fewer at the end)."""

    @abstractmethod
    async def stat(self, name: str) -> ObjectInfo:
        """Return the object's size. Raises ObjectNotFound."""

    @abstractmethod
    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Yield the objects whose names start with ``prefix``."""

    @abstractmethod
    async def delete(self, name: str) -> None:
        """Remove the object; a missing object is not an error."""

    async def exists(self, name: str) -> bool:
        from drtool.errors import ObjectNotFound

        try:
            await self.stat(name)
        except ObjectNotFound:
            return False
        return True

    async def extend_retention(self, name: str) -> bool:
        """Object Lock (``retention`` set): make the object retained until now + retention when
        its retention ends within half of that; True when extended. Raises ObjectNotFound.
        Default (no Object Lock): nothing to do, False."""
        return False

    async def check(self) -> list[str]:
        """Check the backend can hold a repository (``drtool init``). Raises what it cannot
        do (e.g. a missing bucket); returns one-line notes on what it does instead of a
        feature the server lacks. Default: nothing to check."""
        return []

    async def close(self) -> None:
        """Release connections. Idempotent."""

    async def __aenter__(self) -> "Storage":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
