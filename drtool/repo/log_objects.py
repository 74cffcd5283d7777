"""Change-log objects in the repository (docs/FORMAT.md §10): slices and base markers.

A mixin of ``Repository`` (it uses the repository's storage, writer keys and session data
key). Names: ``log/<table key>/<timeline>/s-<t0>-<t1>`` (a slice, sealed like a data object
under this session's data key with magic ``DRTS``: only identities and the passphrase read
it, a writer key suffices to write it) and ``log/<table key>/<timeline>/b-<snapshot id>`` (a
base marker, sealed like a manifest under K_meta with magic ``DRTB``: every process that opens
the repository reads it). The table key hides the table's name: 32 hex digits of
HMAC-SHA256(K_name, "drtool log table" || 0x00 || "db.table").

Sealing and uploading are separate steps (``seal_slice``, ``put_log_blob``) so that sealed
slices can wait in a local spool while the storage is unreachable: the spool holds ciphertext
only.
"""

from __future__ import annotations

import hmac
import hashlib

from drtool.errors import IntegrityError, ObjectExists, ObjectNotFound
from drtool.repo import objects as O
from drtool.util.workers import run_sized

LOG_PREFIX = "log/"
SLICE_MAGIC = b"DRTS"
BASE_MAGIC = b"DRTB"
_TABLE_KEY_DOMAIN = b"drtool log table\x00"


class LogObjects:
    """Log operations of ``Repository`` (see there for construction)."""

    def log_table_key(self, table: str) -> str:
        """The 32 hex digits naming ``table`` ("db.table") under ``log/``."""
        mac = hmac.new(self._keys.name, _TABLE_KEY_DOMAIN + table.encode(), hashlib.sha256)
        return mac.hexdigest()[:32]

    async def seal_slice(self, name: str, plaintext: bytes) -> bytes:
        """Compress and encrypt a slice under this session's data key, bound to ``name``
        (the key object is stored first on first use: raises StorageUnreachable when that
        fails)."""
        keyid, data_key = await self._session_key()
        blob = await run_sized(O.seal_data, data_key, bytes.fromhex(keyid), name, plaintext)
        return SLICE_MAGIC + blob[len(O.DATA_MAGIC):]

    async def put_log_blob(self, name: str, blob: bytes) -> bool:
        """Store a sealed log object write-once; False when it already exists (an upload
        repeated after a crash: same name, so the same content). Raises StorageUnreachable,
        StorageError."""
        try:
            await self.storage.put(name, blob)
        except ObjectExists:
            return False
        return True

    async def get_slice(self, name: str) -> bytes:
        """Fetch, authenticate and decompress a slice; its plaintext. Raises ObjectNotFound,
        IntegrityError naming the slice, EncryptionKeyError."""
        blob = await self.storage.get(name)
        if blob[:4] != SLICE_MAGIC:
            raise IntegrityError(f"slice {name} failed authentication (not a slice)")
        return await self._open_sealed_data(name, O.DATA_MAGIC + blob[4:], f"slice {name}", name)

    async def put_base_marker(self, name: str, plaintext: bytes) -> None:
        blob = await run_sized(O.seal_manifest, self._keys.meta, name, plaintext, BASE_MAGIC)
        await self.put_log_blob(name, blob)

    async def get_base_marker(self, name: str) -> bytes:
        """Raises ObjectNotFound, IntegrityError naming the marker."""
        blob = await self.storage.get(name)
        try:
            return await run_sized(O.open_manifest, self._keys.meta, name, blob, BASE_MAGIC)
        except O.SealedObjectError:
            raise IntegrityError(f"base marker {name} failed authentication") from None

    async def list_log(self, prefix: str = LOG_PREFIX) -> dict[str, int]:
        """Every log object name under ``prefix`` with its stored size."""
        return {info.name: info.size async for info in self.storage.list(prefix)}

    async def delete_log(self, name: str) -> None:
        """Remove a log object; idempotent (merging and log retention only)."""
        try:
            await self.storage.delete(name)
        except ObjectNotFound:
            pass
