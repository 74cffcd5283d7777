"""Checking snapshots: every object a manifest names exists with the expected size; with
``read_data`` every object is also decrypted, decompressed and checked against its digests.

Problems are collected, not raised, so that one run reports all of them (by snapshot, table
and object). Each object is checked once even when several snapshots reference it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from drtool.core.progress import NullProgress, Progress
from drtool.core.segments import decode_segment
from drtool.digest import fold
from drtool.errors import DrtoolError, EncryptionKeyError
from drtool.manifest import Manifest, SegmentRef, TableEntry
from drtool.repo.repository import Repository


@dataclass(frozen=True)
class Problem:
    snapshot: str
    table: str  # "" for snapshot-level problems
    object: str  # "" when not about one object
    message: str

    def __str__(self) -> str:
        where = " ".join(p for p in (f"snapshot {self.snapshot}",
                                     self.table and f"table {self.table}",
                                     self.object and f"object {self.object}") if p)
        return f"{where}: {self.message}"


@dataclass
class VerifyReport:
    snapshots: int = 0
    objects: int = 0
    bytes_read: int = 0
    problems: list[Problem] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.problems is None:
            self.problems = []


async def verify(
    repo: Repository, snapshot: str | None = None, *, read_data: bool = False,
    progress: Progress = NullProgress(), concurrency: int = 4,
) -> VerifyReport:
    """Verify one snapshot (``latest``, an id or a prefix) or, with None, all of them."""
    if read_data and not repo.can_read_data:
        raise EncryptionKeyError(
            "verify --read-data needs a key that can decrypt document data: set "
            "encryption.identity_file or encryption.passphrase_env in the policy"
        )
    report = VerifyReport()
    if snapshot is not None:
        manifests = [await repo.resolve(snapshot)]
    else:
        manifests = []
        for sid in await repo.list_snapshots():
            try:
                manifests.append(await repo.load_manifest(sid))
            except DrtoolError as err:
                report.problems.append(Problem(sid, "", "", str(err)))
    report.snapshots = len(manifests)
    stored = await repo.list_data()
    checked: dict[str, asyncio.Task[str | None]] = {}  # object id -> its check
    slots = asyncio.Semaphore(concurrency)
    task = "verify"
    progress.start(task, sum(m.doc_count for m in manifests) if read_data else None)

    async def check(ref: SegmentRef) -> str | None:
        if ref.id not in stored:
            return "missing"
        if stored[ref.id] != ref.stored_size:
            return f"size {stored[ref.id]} bytes, expected {ref.stored_size}"
        if not read_data:
            return None
        async with slots:
            try:
                plaintext = await repo.get_data(ref.id)
            except DrtoolError as err:
                return str(err)
        report.bytes_read += ref.stored_size
        progress.advance(task, ref.count, len(plaintext))
        lines = decode_segment(plaintext)
        if len(plaintext) != ref.plain_size or len(lines) != ref.count:
            return f"holds {len(lines)} documents in {len(plaintext)} bytes, expected " \
                   f"{ref.count} in {ref.plain_size}"
        if fold(lines) != ref.digest:
            return "digest does not match the manifest"
        return None

    async def check_once(ref: SegmentRef) -> str | None:
        if ref.id not in checked:
            checked[ref.id] = asyncio.ensure_future(check(ref))
        return await checked[ref.id]

    try:
        for manifest in manifests:
            for entry in manifest.tables:
                await _verify_table(manifest, entry, check_once, report)
    finally:
        progress.finish(task)
    report.objects = len(checked)
    return report


async def _verify_table(manifest: Manifest, entry: TableEntry, check_once, report: VerifyReport) -> None:
    refs = entry.objects()
    results = await asyncio.gather(*(check_once(ref) for ref in refs))
    for ref, message in zip(refs, results):
        if message:
            report.problems.append(Problem(manifest.id, str(entry.name), ref.id, message))
    if fold(r.digest for r in entry.ranges) != entry.digest:
        report.problems.append(Problem(manifest.id, str(entry.name), "",
                                       "table digest does not match its range digests"))
    if sum(r.count for r in entry.ranges) != entry.doc_count:
        report.problems.append(Problem(manifest.id, str(entry.name), "",
                                       "document count does not match its ranges"))
