"""Repository locks: which processes use the repository, so that prune never deletes an object
that a running snapshot references (docs/FORMAT.md §8 specifies the objects and argues why the
protocol is safe).

A lock is one or more sealed objects ``locks/<id>`` of one *holder*. Kinds:

* ``shared``: taken by every snapshot for its whole run; any number may coexist.
* ``exclusive``: taken by forget and prune; excludes every other lock.

Protocol (``HeldLock.acquire``): write the own lock object FIRST, then list the locks; if a live
lock of another holder conflicts, remove the own object and fail. While held, a background task
writes a fresh object every ``refresh_every`` seconds (storage is write-once) and deletes the
generation before the previous one, so a listing racing a refresh still sees a recent object. A
lock not refreshed for ``STALE_AFTER`` is stale: ignored by others and removable by
``drtool unlock``. A holder whose own refresh gap exceeded ``LOST_AFTER`` (process suspended,
storage down) or whose object vanished (``unlock --force``) has *lost* its lock: ``check()``
raises from then on, and the repository calls it before writing a manifest.

Clocks and sleeps are injectable so that tests decide staleness without waiting.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from drtool.repo import crypto
from drtool.errors import DrtoolError, ObjectNotFound, RepositoryError, UsageError
from drtool.repo import objects as O
from drtool.storage.base import Storage

SHARED, EXCLUSIVE = "shared", "exclusive"
KINDS = (SHARED, EXCLUSIVE)
LOCK_FORMAT = "drtool-lock"
LOCK_VERSION = 1
LOCK_MAGIC = b"DRTL"
LOCK_HEADER_SIZE = 4 + 1 + crypto.NONCE_SIZE  # 17
REFRESH_EVERY = 5 * 60.0  # seconds between refreshes of a held lock
STALE_AFTER = 30 * 60.0  # a lock not refreshed for this long is ignored by others
LOST_AFTER = STALE_AFTER / 2  # a holder that could not refresh for this long stops

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LockRecord:
    """One lock object's content. ``holder`` is shared by every refresh of one lock."""

    id: str
    holder: str
    kind: str
    purpose: str
    host: str
    pid: int
    created: datetime
    refreshed: datetime

    def stale(self, now: datetime) -> bool:
        return (now - self.refreshed).total_seconds() > STALE_AFTER

    def describe(self) -> str:
        return (f"{self.purpose} on host {self.host} (pid {self.pid}) "
                f"since {self.created:%Y-%m-%d %H:%M:%S} UTC")

    def to_json(self) -> dict:
        return {"format": LOCK_FORMAT, "version": LOCK_VERSION, "holder": self.holder,
                "kind": self.kind, "purpose": self.purpose, "host": self.host, "pid": self.pid,
                "created": _iso(self.created), "refreshed": _iso(self.refreshed)}

    @classmethod
    def from_json(cls, lock_id: str, data: dict) -> "LockRecord":
        """Raises ValueError for anything but a version-1 lock of a known kind."""
        if data.get("format") != LOCK_FORMAT or data.get("version") != LOCK_VERSION:
            raise ValueError("unknown lock format or version")
        if data["kind"] not in KINDS or not isinstance(data["pid"], int):
            raise ValueError("bad kind or pid")
        return cls(lock_id, str(data["holder"]), data["kind"], str(data["purpose"]),
                   str(data["host"]), data["pid"], datetime.fromisoformat(data["created"]),
                   datetime.fromisoformat(data["refreshed"]))


@dataclass(frozen=True)
class DamagedLock:
    """A lock object that cannot be read. Treated as a live lock of every kind (fail safe):
    only ``drtool unlock --force`` removes it."""

    id: str
    why: str

    def describe(self) -> str:
        return f"an unreadable lock object locks/{self.id} ({self.why})"


AnyLock = LockRecord | DamagedLock


class LockStore:
    """Reads and writes lock objects, sealed like manifests under K_meta (magic ``DRTL``)."""

    def __init__(self, storage: Storage, meta_key: bytes) -> None:
        self.storage = storage
        self._key = meta_key

    async def put(self, record: LockRecord) -> None:
        name = O.LOCKS_PREFIX + record.id
        nonce = os.urandom(crypto.NONCE_SIZE)
        header = LOCK_MAGIC + bytes([LOCK_VERSION]) + nonce
        text = json.dumps(record.to_json(), sort_keys=True, separators=(",", ":"))
        await self.storage.put(name, O._seal(header, self._key, nonce, name, text.encode()))

    async def list(self) -> list[AnyLock]:
        """Every lock object (damaged ones as DamagedLock); names not ``locks/<32 hex>`` are
        ignored, as are objects deleted while listing."""
        found: list[AnyLock] = []
        names = [info.name async for info in self.storage.list(O.LOCKS_PREFIX)]
        for name in names:
            lock_id = name[len(O.LOCKS_PREFIX):]
            if not O.is_keyid(lock_id):
                continue
            try:
                blob = await self.storage.get(name)
            except ObjectNotFound:  # released while we listed
                continue
            found.append(self._decode(lock_id, name, blob))
        return found

    def _decode(self, lock_id: str, name: str, blob: bytes) -> AnyLock:
        if len(blob) < LOCK_HEADER_SIZE + O.TAG_SIZE or blob[:4] != LOCK_MAGIC or blob[4] != LOCK_VERSION:
            return DamagedLock(lock_id, "bad header")
        header = blob[:LOCK_HEADER_SIZE]
        try:
            plain = O._open(header, self._key, header[5:], name, blob)
            return LockRecord.from_json(lock_id, json.loads(plain))
        except O.SealedObjectError:
            return DamagedLock(lock_id, "failed authentication")
        except (ValueError, KeyError, TypeError, AttributeError):
            return DamagedLock(lock_id, "malformed")

    async def exists(self, lock_id: str) -> bool:
        return await self.storage.exists(O.LOCKS_PREFIX + lock_id)

    async def delete(self, lock_id: str) -> None:
        """Idempotent."""
        await self.storage.delete(O.LOCKS_PREFIX + lock_id)


def blocking(kind: str, holder: str, locks: list[AnyLock], now: datetime) -> AnyLock | None:
    """The first lock of another holder that forbids taking a ``kind`` lock now: a live
    exclusive lock, a live lock of any kind when ``kind`` is exclusive, or a damaged lock."""
    for lock in locks:
        if isinstance(lock, DamagedLock):
            return lock
        if lock.holder == holder or lock.stale(now):
            continue
        if kind == EXCLUSIVE or lock.kind == EXCLUSIVE:
            return lock
    return None


class HeldLock:
    """A lock this process takes: ``async with HeldLock(store, "shared", "snapshot"): ...``.

    ``__aenter__`` raises RepositoryError when a conflicting live lock exists (after removing
    its own object again); while held, a background task refreshes it; ``__aexit__`` removes
    every object it wrote. ``registry`` (a set) holds it while it is held, so that the
    repository can ``check()`` every held lock before committing a manifest."""

    def __init__(self, store: LockStore, kind: str, purpose: str, *, clock: Clock = utcnow,
                 sleep: Sleep = asyncio.sleep, refresh_every: float = REFRESH_EVERY,
                 registry: set | None = None) -> None:
        if kind not in KINDS:
            raise UsageError(f"unknown lock kind {kind!r}: expected shared or exclusive")
        self.store, self.kind, self.purpose = store, kind, purpose
        self.holder = os.urandom(16).hex()
        self._clock, self._sleep, self._every = clock, sleep, refresh_every
        self._registry = registry if registry is not None else set()
        self._objects: list[str] = []  # lock object ids written, oldest first
        self._created = self._refreshed = clock()
        self._lost: str | None = None
        self._task: asyncio.Task | None = None

    @property
    def where(self) -> str:
        return self.store.storage.location

    def _record(self, now: datetime) -> LockRecord:
        return LockRecord(os.urandom(16).hex(), self.holder, self.kind, self.purpose,
                          socket.gethostname(), os.getpid(), self._created, now)

    async def _write(self, now: datetime) -> None:
        record = self._record(now)
        self._objects.append(record.id)  # before the put: release removes it even if cut short
        await self.store.put(record)
        self._refreshed = now

    async def acquire(self) -> None:
        """Write the own lock object, then list; fail if a conflicting live lock exists."""
        self._created = now = self._clock()
        await self._write(now)
        try:
            found = await self.store.list()
            other = blocking(self.kind, self.holder, found, self._clock())
        except BaseException:
            await self._remove_own()
            raise
        if other is not None:
            await self._remove_own()
            if isinstance(other, DamagedLock):
                raise RepositoryError(
                    f"{self.where}: repository holds {other.describe()}; run drtool unlock "
                    "--force if no drtool process is using the repository")
            raise RepositoryError(
                f"{self.where}: repository is locked by {other.describe()}; try again later "
                "(drtool unlock --force removes the lock if that process is gone)")
        self._registry.add(self)

    async def refresh(self) -> None:
        """Write a fresh lock object and delete the generation before the previous one.
        Marks the lock lost if the refresh gap exceeded LOST_AFTER or its object vanished."""
        now = self._clock()
        self._note_gap(now)
        if self._objects and not await self.store.exists(self._objects[-1]):
            self._lost = self._lost or "its lock object was removed (drtool unlock --force?)"
        await self._write(now)
        while len(self._objects) > 2:
            await self.store.delete(self._objects[0])
            self._objects.pop(0)

    def _note_gap(self, now: datetime) -> None:
        gap = (now - self._refreshed).total_seconds()
        if self._lost is None and gap > LOST_AFTER:
            self._lost = f"not refreshed for {int(gap)} s"

    def check(self) -> None:
        """Raise RepositoryError if the lock may have been treated as stale by others."""
        self._note_gap(self._clock())
        if self._lost is not None:
            raise RepositoryError(
                f"{self.where}: {self.purpose} stopped: its {self.kind} repository lock was lost "
                f"({self._lost}), so another process may have ignored it; run {self.purpose} again")

    async def _refresher(self) -> None:
        while True:
            await self._sleep(self._every)
            try:
                await self.refresh()
            except DrtoolError:
                pass  # retried next time; check() notices a gap that grows too long

    async def _remove_own(self) -> None:
        for lock_id in list(self._objects):
            await self.store.delete(lock_id)
            self._objects.remove(lock_id)

    async def release(self) -> None:
        """Stop refreshing and remove every own lock object. Idempotent."""
        self._registry.discard(self)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._remove_own()

    async def __aenter__(self) -> "HeldLock":
        await self.acquire()
        self._task = asyncio.create_task(self._refresher())
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        try:
            await self.release()
        except DrtoolError:
            if exc_type is None:
                raise
            # The body's error matters more; the leftover lock turns stale by itself.


async def remove_locks(store: LockStore, *, force: bool, now: datetime | None = None
                       ) -> tuple[list[AnyLock], list[AnyLock]]:
    """Remove stale lock objects (every lock object with ``force``); return (removed, kept)."""
    now = now or utcnow()
    removed: list[AnyLock] = []
    kept: list[AnyLock] = []
    for lock in await store.list():
        if force or (isinstance(lock, LockRecord) and lock.stale(now)):
            await store.delete(lock.id)
            removed.append(lock)
        else:
            kept.append(lock)
    return removed, kept
