"""Listing what a repository holds."""

from __future__ import annotations

from dataclasses import dataclass

from drtool.repo.repository import Repository


@dataclass(frozen=True)
class SnapshotSummary:
    id: str
    time: str
    policy: str
    source: str
    tables: list[str]
    documents: int
    bytes_stored: int  # stored bytes of every object the snapshot references
    bytes_new: int  # stored bytes this snapshot uploaded
    imported: dict | None = None  # made by import-dump: the archive's name, dump and time

    def to_json(self) -> dict:
        return self.__dict__.copy()


async def list_snapshots(repo: Repository) -> list[SnapshotSummary]:
    """Every snapshot, oldest first. Needs only the writer key (manifests are metadata)."""
    out = []
    for sid in await repo.list_snapshots():
        m = await repo.load_manifest(sid)
        out.append(SnapshotSummary(
            id=m.id, time=m.time, policy=m.policy, source=m.source,
            tables=[str(t.name) for t in m.tables], documents=m.doc_count,
            bytes_stored=m.bytes_referenced, bytes_new=m.bytes_new,
            imported=m.extra.get("imported"),
        ))
    return out
