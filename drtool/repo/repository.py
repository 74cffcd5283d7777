"""The repository: encrypted, compressed, write-once objects in a Storage.

Layout, object formats and the threat model are specified in docs/FORMAT.md; this class is the
only code that knows them. Core code asks it for segments and manifests by id and never sees
ciphertext, keys or object names.

Key material (``KeySources``) comes from the policy: recipients (public keys), an identity file
(private key: can read data), a passphrase (can read data), a writer key file (can write and
read metadata, cannot read data written by other sessions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from drtool.manifest import Manifest
from drtool.storage.base import Storage


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


class Repository:
    """See module docstring. Construct with ``create`` or ``open``; never directly."""

    storage: Storage
    id: str

    @classmethod
    async def create(cls, storage: Storage, keys: KeySources) -> "Repository":
        """Initialise a new repository. Raises RepositoryError if one exists there."""
        raise NotImplementedError

    @classmethod
    async def open(cls, storage: Storage, keys: KeySources) -> "Repository":
        """Open an existing repository.

        Raises RepositoryError (no repository there; unknown format version),
        EncryptionKeyError (no usable key among ``keys``: says which were tried and why)."""
        raise NotImplementedError

    @property
    def can_read_data(self) -> bool:
        """True when an identity or passphrase unlocked the data keys."""
        raise NotImplementedError

    # --- writing ---------------------------------------------------------------------------
    def boundary_hash(self, key: str) -> int:
        """Keyed 64-bit hash of a key text, for content-defined segment boundaries."""
        raise NotImplementedError

    async def put_data(self, plaintext: bytes) -> StoredObject:
        """Compress, encrypt and store a data object; its id is a keyed hash of ``plaintext``.
        An identical object already stored is not uploaded again (``new=False``)."""
        raise NotImplementedError

    async def put_manifest(self, manifest: Manifest) -> None:
        """Seal and store a manifest under its id. Written last: this makes a snapshot exist."""
        raise NotImplementedError

    # --- reading ---------------------------------------------------------------------------
    async def get_data(self, object_id: str) -> bytes:
        """Fetch, authenticate, decompress and check a data object; return its plaintext.

        Raises ObjectNotFound, IntegrityError (naming the object), EncryptionKeyError (this
        process holds no key able to read data)."""
        raise NotImplementedError

    async def data_size(self, object_id: str) -> int:
        """Stored size of a data object. Raises ObjectNotFound."""
        raise NotImplementedError

    async def list_data(self) -> dict[str, int]:
        """Every stored data object id with its stored size."""
        raise NotImplementedError

    async def list_snapshots(self) -> list[str]:
        """Snapshot ids, oldest first."""
        raise NotImplementedError

    async def load_manifest(self, snapshot_id: str) -> Manifest:
        """Raises NotFound, IntegrityError."""
        raise NotImplementedError

    async def resolve(self, ref: str) -> Manifest:
        """``latest``, a full id or a unique id prefix -> its manifest. Raises NotFound."""
        raise NotImplementedError

    async def delete_manifest(self, snapshot_id: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        await self.storage.close()
