"""Checking snapshots: every object a manifest names exists with the expected size; with
``read_data`` every object is also decrypted, decompressed and checked against its digests.
Under Object Lock (s3:// with object_lock) every object and manifest is also checked to be
retained at least object_lock after it was written (one HEAD each).

Problems are collected, not raised, so that one run reports all of them (by snapshot, table
and object). Each object is checked once even when several snapshots reference it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from drtool.snapshots.object_lock import retention_shortfall
from drtool.util.progress import NullProgress, Progress
from drtool.snapshots.layers import merged_rows
from drtool.snapshots.segments import decode_index, decode_segment
from drtool.reql.digest import digest_of_hashes, digest_of_texts, fold_digests, r_uuid
from drtool.reql.ordering import key_order
from drtool.errors import DrtoolError, EncryptionKeyError
from drtool.repo.manifest import Manifest, TableEntry
from drtool.repo.repository import Repository


@dataclass(frozen=True)
class Problem:
    snapshot: str
    table: str  # "" for snapshot-level problems
    object: str  # "" when not about one object
    message: str

    def __str__(self) -> str:
        where = " ".join(p for p in (self.snapshot and f"snapshot {self.snapshot}",
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
    progress: Progress = NullProgress(), concurrency: int = 4, lock: bool = True,
) -> VerifyReport:
    """Verify one snapshot (``latest``, an id or a prefix) or, with None, all of them. Holds a
    shared repository lock (a concurrent prune would otherwise show up as missing objects);
    ``lock=False`` verifies without one, for repositories that cannot be written to."""
    if not lock:
        return await _verify(repo, snapshot, read_data=read_data, progress=progress,
                             concurrency=concurrency)
    async with repo.lock("shared", "verify"):
        return await _verify(repo, snapshot, read_data=read_data, progress=progress,
                             concurrency=concurrency)


async def _verify(
    repo: Repository, snapshot: str | None, *, read_data: bool, progress: Progress,
    concurrency: int,
) -> VerifyReport:
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
    stored = {"data": await repo.list_data(), "index": await repo.list_index()}
    checked: dict[tuple[str, str], asyncio.Task[str | None]] = {}  # (kind, id) -> its check
    slots = asyncio.Semaphore(concurrency)
    task = "verify"
    progress.start(task, sum(m.doc_count for m in manifests) if read_data else None)

    retention = repo.storage.retention

    async def check(kind: str, object_id: str, size: int, count: int, digest: str | None,
                    index: str | None) -> str | None:
        problem = await check_content(kind, object_id, size, count, digest, index)
        if problem is None and retention:
            async with slots:
                info = await repo.stat_object(kind, object_id)
            problem = retention_shortfall(info, retention)
        return problem

    async def check_content(kind: str, object_id: str, size: int, count: int,
                            digest: str | None, index: str | None) -> str | None:
        found = stored[kind].get(object_id)
        if found is None:
            return "missing" if kind == "data" else "index object missing"
        if found != size:
            return f"{'' if kind == 'data' else 'index object '}size {found} bytes, expected {size}"
        if not read_data:
            return None
        async with slots:
            try:
                if kind == "data":
                    lines = decode_segment(await repo.get_data(object_id))
                else:
                    lines = decode_index(await repo.get_index(object_id))
            except DrtoolError as err:
                return str(err)
        report.bytes_read += size
        if len(lines) != count:
            return f"holds {len(lines)} entries, expected {count}"
        if kind == "data":
            progress.advance(task, count, 0)
            if digest_of_texts(lines) != digest:
                return "digest does not match the manifest"
            if index is not None and index in stored["index"]:
                try:
                    keys = decode_index(await repo.get_index(index))
                except DrtoolError:
                    return None  # reported by the index object's own check
                return _index_mismatch(lines, keys, index)
        return None

    def check_once(kind: str, object_id: str, size: int, count: int, digest: str | None = None,
                   index: str | None = None):
        if (kind, object_id) not in checked:
            checked[(kind, object_id)] = asyncio.ensure_future(
                check(kind, object_id, size, count, digest, index))
        return checked[(kind, object_id)]

    try:
        for manifest in manifests:
            if retention:
                short = retention_shortfall(await repo.stat_object("snapshot", manifest.id),
                                            retention)
                if short:
                    report.problems.append(Problem(manifest.id, "", "", f"manifest {short}"))
            for entry in manifest.tables:
                await _verify_table(manifest, entry, check_once, report)
                if read_data and not any(p.snapshot == manifest.id and p.table == str(entry.name)
                                         for p in report.problems):
                    for message in await _final_state_problems(repo, entry):
                        report.problems.append(
                            Problem(manifest.id, str(entry.name), "", message))
    finally:
        progress.finish(task)
    report.objects = len(checked)
    return report


async def _verify_table(manifest: Manifest, entry: TableEntry, check_once, report: VerifyReport) -> None:
    checks = []
    for layer in entry.layers:
        for ref in layer.segments:
            checks.append((ref.id, check_once("data", ref.id, ref.stored_size, ref.count,
                                              ref.digest, ref.index)))
            if ref.index is not None:
                checks.append((ref.index, check_once("index", ref.index, ref.index_size, ref.count)))
        for ref in layer.deletions:
            checks.append((ref.id, check_once("index", ref.id, ref.stored_size, ref.count)))
    results = await asyncio.gather(*(job for _, job in checks))
    for (object_id, _), message in zip(checks, results):
        if message:
            report.problems.append(Problem(manifest.id, str(entry.name), object_id, message))
    if fold_digests(r.digest for r in entry.ranges) != entry.digest:
        report.problems.append(Problem(manifest.id, str(entry.name), "",
                                       "table digest does not match its range digests"))
    if sum(r.count for r in entry.ranges) != entry.doc_count:
        report.problems.append(Problem(manifest.id, str(entry.name), "",
                                       "document count does not match its ranges"))


def _index_mismatch(texts: list[str], keys: list[tuple[str, str]], index: str) -> str | None:
    """Why a segment's index object does not describe its documents (None: it does)."""
    if len(keys) != len(texts):
        return f"index object {index} lists {len(keys)} documents, the segment holds {len(texts)}"
    previous = None
    for n, ((key, h), text) in enumerate(zip(keys, texts)):
        if h != r_uuid(text):
            return f"index object {index} line {n + 1} does not match the document's hash"
        order = key_order(key)
        if previous is not None and order <= previous:
            return f"index object {index} line {n + 1}: keys out of primary-key order"
        previous = order
    return None


async def _final_state_problems(repo: Repository, entry: TableEntry) -> list[str]:
    """Do the stored documents (all layers merged) reproduce every recorded range's count and
    digest? A single-layer table whose segments are its ranges needs no second read."""
    base = entry.layers[0].segments
    ranges = entry.ranges
    if len(entry.layers) == 1 and [s.upto for s in base] == [r.upto for r in ranges]:
        return [f"range {i + 1} of {len(ranges)} does not match its segment's count or digest"
                for i, (s, r) in enumerate(zip(base, ranges))
                if (s.count, s.digest) != (r.count, r.digest)]
    bounds = [None if r.upto is None else key_order(r.upto) for r in ranges]
    found: list[tuple[int, str]] = []
    i, hashes = 0, []
    async for rows in merged_rows(repo, entry):
        for key, text in rows:
            order = key_order(key)
            while bounds[i] is not None and order > bounds[i]:
                found.append((len(hashes), digest_of_hashes(hashes)))
                i, hashes = i + 1, []
            hashes.append(r_uuid(text))
    found.append((len(hashes), digest_of_hashes(hashes)))
    found += [(0, digest_of_hashes([]))] * (len(ranges) - len(found))
    return [f"range {n + 1} of {len(ranges)}: the layers merged give {c} documents / digest "
            f"{d}, the manifest records {r.count} / {r.digest}"
            for n, ((c, d), r) in enumerate(zip(found, ranges)) if (c, d) != (r.count, r.digest)]
