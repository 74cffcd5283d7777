"""What Object Lock (s3:// with ``object_lock``) changes for forget, prune and verify.

A retained object cannot be deleted before its date (``Storage.delete`` raises ObjectRetained
without sending a DELETE): forget keeps such a snapshot and prune such an object, and both
count what is waiting. ``verify`` reports objects whose retention is shorter than the policy's
``object_lock`` after the time they were written (written before object_lock was set, or by a
process with another policy). docs/FORMAT.md, "Immutable repositories", has the threat model.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from drtool.errors import ObjectRetained

#: Retention may start a little before the server's own write time (the client's clock sets
#: it, and the upload takes time): shortfalls under this are not reported.
TOLERANCE = timedelta(minutes=15)


@dataclass
class Waiting:
    """Objects left in place because they are still retained: how many, their bytes, and the
    latest retention date among them (ISO 8601 UTC, "" when none)."""

    objects: int = 0
    bytes: int = 0
    until: str = ""

    def add(self, size: int, until: str) -> None:
        self.objects += 1
        self.bytes += size
        self.until = max(self.until, until)


async def delete_unless_retained(delete: Awaitable[None], size: int, waiting: Waiting) -> bool:
    """Run ``delete``; True when done, False (counted in ``waiting``) when still retained."""
    try:
        await delete
    except ObjectRetained as held:
        waiting.add(size, held.until)
        return False
    return True


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def still_retained(info, now: datetime | None = None) -> str | None:
    """The retention date of a still-retained object (ISO 8601 UTC), else None. ``info`` is
    the object's ObjectInfo (``repo.stat_object``)."""
    until = info.retain_until
    if until is None or until <= (now or datetime.now(UTC)):
        return None
    return iso(until)


def retention_shortfall(info, retention: float) -> str | None:
    """A problem line when the retention of ``info`` (an ObjectInfo) ends sooner than
    ``retention`` seconds after the object was written, else None."""
    if info.modified is None:
        return None  # a backend that cannot tell
    wanted = info.modified + timedelta(seconds=retention)
    if info.retain_until is None:
        return (f"has no Object Lock retention (object_lock wants it retained until "
                f"{iso(wanted)}): anyone holding the repository's credentials can delete it")
    if info.retain_until + TOLERANCE < wanted:
        return (f"is retained until {iso(info.retain_until)} only, less than object_lock after "
                f"it was written ({iso(wanted)})")
    return None
