"""Snapshot manifests in the repository: writing one (which makes a snapshot exist), listing,
loading, resolving ``latest``/prefixes, deleting. A mixin of ``Repository``: it uses the
repository's storage, metadata key and held locks."""

from __future__ import annotations

import json

from drtool.errors import IntegrityError, NotFound, ObjectNotFound, RepositoryError, UsageError
from drtool.repo.manifest import FORMAT_VERSION, Manifest
from drtool.repo import objects as O
from drtool.util.workers import run_sized


class SnapshotCatalog:
    """Manifest operations of ``Repository`` (see there for construction)."""

    async def put_manifest(self, manifest: Manifest) -> None:
        """Seal and store a manifest under its id. Written last: this makes a snapshot exist."""
        if not O.is_snapshot_id(manifest.id):
            raise UsageError(f"invalid snapshot id {manifest.id!r}: expected YYYYMMDDTHHMMSSZ-xxxxxxxx")
        for held in list(self._held_locks):  # a lost lock means prune may have run meanwhile
            held.check()
        name = O.snapshot_name(manifest.id)
        text = json.dumps(manifest.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        blob = await run_sized(O.seal_manifest, self._keys.meta, name, text.encode("utf-8"))
        await self.storage.put(name, blob)

    async def list_snapshots(self) -> list[str]:
        """Snapshot ids, oldest first."""
        ids = []
        async for info in self.storage.list(O.SNAPSHOTS_PREFIX):
            sid = info.name[len(O.SNAPSHOTS_PREFIX):]
            if O.is_snapshot_id(sid):
                ids.append(sid)
        return sorted(ids)

    async def load_manifest(self, snapshot_id: str) -> Manifest:
        """Raises NotFound, IntegrityError."""
        missing = self._missing(snapshot_id)
        if not O.is_snapshot_id(snapshot_id):
            raise missing
        name = O.snapshot_name(snapshot_id)
        try:
            blob = await self.storage.get(name)
        except ObjectNotFound:
            raise missing from None
        try:
            data = json.loads(await run_sized(O.open_manifest, self._keys.meta, name, blob))
        except O.SealedObjectError:
            raise IntegrityError(
                f"snapshot {snapshot_id}: manifest failed authentication (truncated, corrupted or swapped)"
            ) from None
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise IntegrityError(f"snapshot {snapshot_id}: manifest is not valid JSON") from None
        version = data.get("version") if isinstance(data, dict) else None
        if isinstance(version, int) and version != FORMAT_VERSION:
            raise RepositoryError(
                f"snapshot {snapshot_id}: manifest format version {version} is not supported "
                f"by this drtool (supports {FORMAT_VERSION})"
            )
        try:
            manifest = Manifest.from_json(data)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise IntegrityError(f"snapshot {snapshot_id}: manifest is malformed") from None
        if manifest.id != snapshot_id:
            raise IntegrityError(f"snapshot {snapshot_id}: manifest names another snapshot")
        return manifest

    def _missing(self, ref: str) -> NotFound:
        return NotFound(f"snapshot {ref} does not exist in {self.storage.location}: drtool "
                        "snapshots lists the ones it holds")

    async def resolve(self, ref: str) -> Manifest:
        """``latest`` (the newest snapshot that is not a change-log base), a full id or a
        unique id prefix -> its manifest. Raises NotFound
        (no such snapshot, or no snapshot at all) and UsageError (ambiguous prefix)."""
        ids = await self.list_snapshots()
        if ref == "latest":  # the newest that is not a change-log base (one table's, FORMAT §10.3)
            for sid in reversed(ids):
                manifest = await self.load_manifest(sid)
                if "log" not in manifest.extra:
                    return manifest
            raise NotFound(f"{self.storage.location}: the repository has no snapshots"
                           + (" besides the change log's bases (give one by its id)" if ids
                              else ""))
        if ref in ids:
            return await self.load_manifest(ref)
        matches = [i for i in ids if ref and i.startswith(ref)]
        if not matches:
            raise self._missing(ref)
        if len(matches) > 1:
            shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
            raise UsageError(f"snapshot prefix {ref} is ambiguous: it matches {shown}")
        return await self.load_manifest(matches[0])

    async def delete_manifest(self, snapshot_id: str) -> None:
        """Remove a snapshot's manifest (its data objects stay until prune). Idempotent."""
        if not O.is_snapshot_id(snapshot_id):
            raise self._missing(snapshot_id)
        await self.storage.delete(O.snapshot_name(snapshot_id))
