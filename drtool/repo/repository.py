"""The repository: encrypted, compressed, write-once objects in a Storage.

Layout, object formats and the threat model are specified in docs/FORMAT.md; this class is the
only code that knows them. Core code asks it for segments and manifests by id and never sees
ciphertext, keys or object names.

Key material (``KeySources``) comes from the policy: recipients (public keys), an identity file
(private key: can read data), a passphrase (can read data), a writer key file (can write and
read metadata, cannot read data written by other sessions).
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drtool.repo import crypto
from drtool.errors import (
    EncryptionKeyError,
    IntegrityError,
    ObjectExists,
    ObjectNotFound,
    RepositoryError,
    UsageError,
)
from drtool.repo import keys as K
from drtool.repo import objects as O
from drtool.repo.config import build_config, parse_config
from drtool.repo.locks import HeldLock, LockStore
from drtool.storage.base import Storage
from drtool.repo.log_objects import LogObjects
from drtool.repo.snapshots import SnapshotCatalog
from drtool.util.workers import run_sized

INDEX_DOMAIN = b"drtool index\x00"  # index ids never collide with data ids of equal plaintext
_NAME_OF = {"data": O.data_name, "index": O.index_name, "snapshot": O.snapshot_name}


@dataclass(frozen=True)
class KeySources:
    recipients: tuple[str, ...] = ()
    identity_file: Path | None = None
    passphrase: str | None = field(default=None, repr=False)
    writer_key_file: Path | None = None


@dataclass(frozen=True)
class StoredObject:
    id: str  # object id (hex)
    stored_size: int
    new: bool  # False when an identical object already existed (deduplicated)


class Repository(SnapshotCatalog, LogObjects):
    """See module docstring. Construct with ``create`` or ``open``; never directly."""

    storage: Storage
    id: str

    def __init__(self, storage: Storage, repo_id: str, writer: K.WriterKeys,
                 identities: list[crypto.Identity], wrap_to: list[str], tried: list[str]) -> None:
        self.storage = storage
        self.id = repo_id
        self._keys = writer
        self._identities = identities  # unlock data keys (identity file, passphrase identity)
        self._wrap_to = wrap_to  # recipients of this session's data key
        self._tried = tried  # why sources failed, for EncryptionKeyError messages
        self._session: tuple[str, bytes] | None = None  # (keyid hex, data key)
        self._data_keys: dict[str, bytes] = {}
        self._key_lock = asyncio.Lock()
        self._pending: dict[str, asyncio.Future] = {}
        self._boundary_hash = writer.boundary_hasher()
        self.locks = LockStore(storage, writer.meta)  # docs/FORMAT.md §8
        self._held_locks: set[HeldLock] = set()

    @classmethod
    async def create(cls, storage: Storage, keys: KeySources) -> "Repository":
        """Initialise a new repository. Raises RepositoryError if one exists there.

        Raises UsageError when there is neither a recipient nor a passphrase (nobody could
        read the data) or a recipient is malformed; EncryptionKeyError for unusable key files.
        With ``writer_key_file`` set, W is written there (0600) or, if the file exists, read
        from it."""
        where = storage.location
        if await storage.exists(O.CONFIG_NAME):
            raise RepositoryError(f"{where}: a repository already exists here")
        identity = crypto.load_identity(keys.identity_file) if keys.identity_file else None
        recipients = list(keys.recipients) or ([identity.recipient] if identity else [])
        for r in recipients:
            crypto.parse_recipient(r)
        if not recipients and keys.passphrase is None:
            raise UsageError(
                "cannot create a repository without a recipient or a passphrase: nobody could read it"
            )
        repo_id = os.urandom(16).hex()
        writer = None
        if keys.writer_key_file is not None and os.path.exists(keys.writer_key_file):
            writer = K.load_writer_key(keys.writer_key_file)
        writer = writer or os.urandom(crypto.KEY_SIZE)
        wk = K.WriterKeys.derive(writer, repo_id)
        kdf = sealed_pid = prec = None
        identities = [identity] if identity else []
        if keys.passphrase is not None:
            kdf = crypto.new_scrypt_params()
            kek = await asyncio.to_thread(crypto.passphrase_kek, keys.passphrase, kdf)
            pid = crypto.new_identity()
            sealed_pid, prec = K.seal_passphrase_identity(kek, repo_id, pid), pid.recipient
            identities.append(pid)
        wrap_to = recipients + ([prec] if prec else [])
        blob = build_config(
            repo_id, K.now_iso(), kdf, sealed_pid,
            K.seal_recipients(wk, repo_id, recipients, prec),
            [crypto.wrap_key(writer, r) for r in wrap_to],
            K.writer_check(writer, repo_id),
        )
        if keys.writer_key_file is not None and not os.path.exists(keys.writer_key_file):
            K.create_writer_key_file(keys.writer_key_file, writer)
        try:
            await storage.put(O.CONFIG_NAME, blob)
        except ObjectExists:
            raise RepositoryError(f"{where}: a repository already exists here") from None
        # Only identities that can open W count as readers (an identity outside the recipients
        # given explicitly cannot read this repository).
        readers = [i for i in identities if i.recipient in wrap_to]
        return cls(storage, repo_id, wk, readers, wrap_to, [])

    @classmethod
    async def open(cls, storage: Storage, keys: KeySources) -> "Repository":
        """Open an existing repository.

        Raises RepositoryError (no repository there; unknown format version),
        EncryptionKeyError (no usable key among ``keys``: says which were tried and why)."""
        where = storage.location
        try:
            blob = await storage.get(O.CONFIG_NAME)
        except ObjectNotFound:
            raise RepositoryError(f"{where}: no repository here (run drtool init)") from None
        cfg = parse_config(blob, where)
        repo_id = cfg["id"]
        writer, identities, tried = await K.unlock(
            cfg, where, keys.identity_file, keys.passphrase, keys.writer_key_file
        )
        wk = K.WriterKeys.derive(writer, repo_id)
        try:
            recipients, prec = K.open_recipients(wk, repo_id, cfg["recipients"])
        except (ValueError, KeyError, TypeError, IntegrityError):
            raise RepositoryError(f"{where}: repository config is damaged (recipients)") from None
        wrap_to = list(keys.recipients) or recipients
        for r in wrap_to:
            crypto.parse_recipient(r)
        return cls(storage, repo_id, wk, identities, wrap_to + ([prec] if prec else []), tried)

    @property
    def can_read_data(self) -> bool:
        """True when an identity or passphrase unlocked the data keys."""
        return bool(self._identities)

    # --- writing ---------------------------------------------------------------------------
    @property
    def boundary_hash(self) -> Callable[[str | bytes], int]:
        """The keyed 64-bit hash of a key text, str or UTF-8 bytes (a function: call
        ``repo.boundary_hash(key)``), for content-defined segment boundaries."""
        return self._boundary_hash

    async def _session_key(self) -> tuple[str, bytes]:
        """This session's data key, storing its key object first on first use."""
        async with self._key_lock:
            if self._session is None:
                keyid, data_key = os.urandom(O.KEYID_SIZE).hex(), os.urandom(crypto.KEY_SIZE)
                blob = K.encode_key_object(self.id, keyid, data_key, self._wrap_to)
                await self.storage.put(O.key_name(keyid), blob)
                self._session = (keyid, data_key)
            return self._session

    async def put_data(self, plaintext: bytes) -> StoredObject:
        """Compress, encrypt and store a data object; its id is a keyed hash of ``plaintext``.
        An identical object already stored is not uploaded again (``new=False``)."""
        oid = await run_sized(self._keys.object_id, plaintext)
        pending = self._pending.get(oid)
        if pending is not None:  # the same object is being uploaded by a concurrent call
            size = await asyncio.shield(pending)
            return StoredObject(oid, size, False)
        name = O.data_name(oid)
        future = asyncio.get_running_loop().create_future()
        self._pending[oid] = future
        try:
            try:
                stored = StoredObject(oid, (await self.storage.stat(name)).size, False)
            except ObjectNotFound:
                keyid, data_key = await self._session_key()
                blob = await run_sized(O.seal_data, data_key, bytes.fromhex(keyid), name, plaintext)
                try:
                    await self.storage.put(name, blob)
                    stored = StoredObject(oid, len(blob), True)
                except ObjectExists:  # another process stored it meanwhile
                    stored = StoredObject(oid, (await self.storage.stat(name)).size, False)
            future.set_result(stored.stored_size)
            return stored
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # mark retrieved: concurrent waiters may not exist
            raise
        finally:
            del self._pending[oid]

    async def put_index(self, plaintext: bytes) -> StoredObject:
        """Store an index object (primary keys and document hashes of a segment, or deleted
        keys), sealed with the metadata key so that a writer can read it back to make
        incremental snapshots. Content-addressed and deduplicated like data objects."""
        oid = await run_sized(self._keys.object_id, INDEX_DOMAIN + plaintext)
        name = O.index_name(oid)
        try:
            return StoredObject(oid, (await self.storage.stat(name)).size, False)
        except ObjectNotFound:
            pass
        blob = await run_sized(O.seal_manifest, self._keys.meta, name, plaintext, O.INDEX_MAGIC)
        try:
            await self.storage.put(name, blob)
        except ObjectExists:
            return StoredObject(oid, (await self.storage.stat(name)).size, False)
        return StoredObject(oid, len(blob), True)

    async def get_index(self, object_id: str) -> bytes:
        """Fetch, authenticate and check an index object. Raises ObjectNotFound,
        IntegrityError naming the object. Needs only the writer key."""
        name = O.index_name(object_id)
        blob = await self.storage.get(name)
        try:
            plaintext = await run_sized(O.open_manifest, self._keys.meta, name, blob, O.INDEX_MAGIC)
        except O.SealedObjectError:
            raise IntegrityError(
                f"index object {object_id} failed authentication (truncated, corrupted or swapped)"
            ) from None
        if self._keys.object_id(INDEX_DOMAIN + plaintext) != object_id:
            raise IntegrityError(f"index object {object_id} does not match its id (forged)")
        return plaintext

    async def list_index(self) -> dict[str, int]:
        """Every stored index object id with its stored size."""
        return await self._list_ids(O.INDEX_PREFIX, O.index_name)

    # --- reading ---------------------------------------------------------------------------
    async def get_data(self, object_id: str) -> bytes:
        """Fetch, authenticate, decompress and check a data object; return its plaintext.

        Raises ObjectNotFound, IntegrityError (naming the object), EncryptionKeyError (this
        process holds no key able to read data)."""
        name = O.data_name(object_id)
        plaintext = await self._open_sealed_data(name, await self.storage.get(name),
                                                 f"data object {object_id}", object_id)
        if self._keys.object_id(plaintext) != object_id:
            raise IntegrityError(f"data object {object_id} does not match its id (forged)")
        return plaintext

    async def _open_sealed_data(self, name: str, blob: bytes, what: str, object_id: str) -> bytes:
        """Authenticate and decrypt an object sealed under a session data key (a data object,
        or a slice after its magic was swapped back). Raises IntegrityError naming ``what``."""
        failed = IntegrityError(f"{what} failed authentication (truncated, corrupted or swapped)")
        try:
            keyid = O.data_keyid(blob).hex()
        except O.SealedObjectError:
            raise failed from None
        data_key = await self._data_key(keyid, object_id)
        try:
            return await run_sized(O.open_data, data_key, name, blob)
        except O.SealedObjectError:
            raise failed from None

    async def _data_key(self, keyid: str, object_id: str) -> bytes:
        if self._session is not None and self._session[0] == keyid:
            return self._session[1]
        if keyid in self._data_keys:
            return self._data_keys[keyid]
        try:
            blob = await self.storage.get(O.key_name(keyid))
        except ObjectNotFound:
            raise IntegrityError(
                f"data object {object_id} failed authentication (truncated, corrupted or "
                f"swapped): its data key {keyid} does not exist"
            ) from None
        if not self._identities:
            why = f" ({'; '.join(self._tried)})" if self._tried else ""
            raise EncryptionKeyError(
                f"cannot read data object {object_id}: this process holds only the writer key of "
                f"repository {self.id}, which reads data of its own session only{why}"
            )
        try:
            stanzas = K.decode_key_object(blob, self.id, keyid)
            data_key = K.unwrap_with(stanzas, self._identities)
        except (ValueError, IntegrityError):
            raise IntegrityError(f"data key object keys/{keyid} is damaged or misplaced") from None
        if data_key is None:
            raise EncryptionKeyError(
                f"data key {keyid} of repository {self.id} is not wrapped to "
                f"{' or '.join(i.source for i in self._identities)}: cannot read data object {object_id}"
            )
        self._data_keys[keyid] = data_key
        return data_key

    async def stat_object(self, kind: str, object_id: str):
        """The storage's ObjectInfo (size, write time, retention) of a ``data``, ``index`` or
        ``snapshot`` object. Raises ObjectNotFound."""
        return await self.storage.stat(_NAME_OF[kind](object_id))

    async def data_size(self, object_id: str) -> int:
        """Stored size of a data object. Raises ObjectNotFound."""
        return (await self.storage.stat(O.data_name(object_id))).size

    async def list_data(self) -> dict[str, int]:
        """Every stored data object id with its stored size."""
        return await self._list_ids(O.DATA_PREFIX, O.data_name)

    async def _list_ids(self, prefix: str, name_of) -> dict[str, int]:
        """Object ids under ``prefix`` whose names are exactly ``name_of(id)``, with sizes."""
        found = {}
        async for info in self.storage.list(prefix):
            oid = info.name.rpartition("/")[2]
            if O.is_object_id(oid) and info.name == name_of(oid):
                found[oid] = info.size
        return found

    async def delete_data(self, object_id: str) -> None:
        """Remove a data object. Idempotent. Only prune calls this, holding the exclusive lock
        after proving no snapshot references the object (docs/FORMAT.md §8)."""
        await self.storage.delete(O.data_name(object_id))

    async def delete_index(self, object_id: str) -> None:
        """Remove an index object; idempotent; the same rules as ``delete_data``."""
        await self.storage.delete(O.index_name(object_id))

    async def extend_retention(self, wanted: set[tuple[str, str]], *, concurrency: int = 8) -> int:
        """Object Lock: keep immutable what is still wanted. ``wanted`` holds (kind, id) pairs
        (``snapshot``, ``data``, ``index``); the config and every key object are wanted too.
        Each of them written more than half the retention ago gets its retention moved to now
        + retention if it ends sooner than half of that (``Storage.extend_retention``; one
        listing, then a HEAD per such object). Returns how many were extended; 0 without
        Object Lock."""
        retention = self.storage.retention
        if not retention:
            return 0
        names = {_NAME_OF[kind](oid) for kind, oid in wanted} | {O.CONFIG_NAME}
        old = datetime.now(UTC) - timedelta(seconds=retention / 2)
        due = [info.name async for info in self.storage.list()
               if (info.name in names or info.name.startswith(O.KEYS_PREFIX))
               and info.modified is not None and info.modified < old]
        slots = asyncio.Semaphore(concurrency)

        async def one(name: str) -> bool:
            async with slots:
                try:
                    return await self.storage.extend_retention(name)
                except ObjectNotFound:
                    return False  # gone meanwhile

        return sum(await asyncio.gather(*(one(n) for n in due)))

    # --- locks (docs/FORMAT.md §8, drtool/repo/locks.py) ------------------------------------
    def lock(self, kind: str, purpose: str, **options) -> HeldLock:
        """``async with repo.lock("shared", "snapshot"):`` holds a repository lock for the
        block (see HeldLock: RepositoryError when a conflicting live lock exists). While a lock
        is held, ``put_manifest`` first checks it was not lost. ``options`` (clock, sleep,
        refresh_every) are for tests."""
        return HeldLock(self.locks, kind, purpose, registry=self._held_locks, **options)

    async def close(self) -> None:
        await self.storage.close()

    async def __aenter__(self) -> "Repository":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
