"""Cutting a key-ordered stream of documents into content-defined segments.

A segment ends after a document whose keyed hash of its primary key falls below a threshold
proportional to the document's size (so segments average ``target`` bytes past ``min_bytes``
whatever the document size), never before ``min_bytes`` and always at ``max_bytes``. The
boundary depends on the key, not on the position in the table, so one changed document only
disturbs its own segment and an unchanged range produces byte-identical segments (stored once).

Changes received from the changefeed while a table is scanned (``PendingChanges``) are folded
into the segment whose key range they fall in when that segment is sealed; a change for a
range that was already sealed is *late* and its range is re-read afterwards (snapshots.snapshot).
"""

from __future__ import annotations

import asyncio
import bisect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from drtool.cluster.base import Row
from drtool.util.progress import NullProgress, Progress
from drtool.reql.digest import hashes_json, uuid_of_bytes
from drtool.errors import IntegrityError
from drtool.repo.manifest import SegmentRef
from drtool.model import DocText, KeyText
from drtool.reql.ordering import key_order
from drtool.repo.repository import Repository
from drtool.util.workers import run_cpu

_HASH_SPACE = 1 << 64


@dataclass(frozen=True)
class ChunkParams:
    min_bytes: int = 256 * 1024
    target: int = 768 * 1024  # mean bytes past min_bytes
    max_bytes: int = 4 * 1024 * 1024


def decode_segment(data: bytes) -> list[DocText]:
    if not data:
        return []
    return data.decode().split("\n")[:-1]


def decode_index(data: bytes) -> list[tuple[KeyText, str]]:
    """An index object -> (key, r.uuid of the document) per line; a deletion list has no
    hashes (empty strings). Layout (docs/FORMAT.md §6.3): a first line with the JSON array
    of the documents' hashes (empty in a deletion list), then one key text per line."""
    if not data:
        return []
    first, _, rest = data.decode().partition("\n")
    keys = rest.split("\n")[:-1]
    hashes = json.loads(first) if first else [""] * len(keys)
    if not isinstance(hashes, list) or len(hashes) != len(keys):
        raise IntegrityError("index object: hashes and keys do not match")
    return list(zip(keys, hashes))


def encode_deletions(keys: list[KeyText]) -> bytes:
    return ("\n" + "".join(f"{key}\n" for key in keys)).encode()


def encode_segment(keys: Sequence, docs: Sequence) -> tuple[bytes, str, bytes]:
    """Segment plaintext (each canonical text followed by a newline; empty for no documents),
    its digest and its index object plaintext, from the UTF-8 key and document texts
    (bytes-like). The work per document is one SHA-1 in a list comprehension; the rest are
    whole-segment joins."""
    hashes = hashes_json(docs)
    if not docs:
        return b"", uuid_of_bytes(hashes), hashes + b"\n"
    plaintext = b"\n".join(docs) + b"\n"
    return plaintext, uuid_of_bytes(hashes), hashes + b"\n" + b"\n".join(keys) + b"\n"


def encode_rows(rows: list[Row]) -> tuple[list[bytes], list[bytes]]:
    """``(key, doc)`` text rows -> UTF-8 keys and documents."""
    return [k.encode() for k, _ in rows], [d.encode() for _, d in rows]


class Chunker:
    def __init__(self, boundary_hash: Callable[[str], int], params: ChunkParams = ChunkParams()):
        self._hash = boundary_hash
        self.params = params

    def cut_after(self, key: KeyText | bytes, doc_len: int, seg_bytes: int) -> bool:
        """``key``: the key text, as str or UTF-8 bytes (the boundary hash takes either)."""
        p = self.params
        if seg_bytes >= p.max_bytes:
            return True
        if seg_bytes < p.min_bytes:
            return False
        return self._hash(key) < (doc_len + 1) * _HASH_SPACE // p.target


class PendingChanges:
    """Feed changes not yet folded into a segment, and the keys that arrived too late."""

    def __init__(self) -> None:
        self.changes: dict[KeyText, DocText | None] = {}
        self.late: set[KeyText] = set()
        self._frontier = None  # key_order of the highest sealed upper bound
        self._all_sealed = False

    def record(self, key: KeyText, doc: DocText | None) -> None:
        if self._all_sealed or (self._frontier is not None and key_order(key) <= self._frontier):
            self.late.add(key)
        else:
            self.changes[key] = doc

    def take_upto(self, upto: KeyText | None) -> list[tuple[KeyText, DocText | None]]:
        """Remove and return (sorted) the changes with key <= upto (all when None); from now
        on changes at or below ``upto`` are late."""
        if upto is None:
            taken = list(self.changes.items())
            self.changes.clear()
            self._all_sealed = True
        else:
            bound = key_order(upto)
            taken = [(k, d) for k, d in self.changes.items() if key_order(k) <= bound]
            for k, _ in taken:
                del self.changes[k]
            self._frontier = bound
        taken.sort(key=lambda kd: key_order(kd[0]))
        return taken


class RangedChanges:
    """Feed changes routed to one PendingChanges per part of the key space (parts scanned at
    the same time: each part's writer seals its own ranges). Part ``i`` holds the keys in
    ``(bounds[i], bounds[i+1]]`` (``None``: the open ends)."""

    def __init__(self, bounds: list[KeyText | None], before: PendingChanges | None = None) -> None:
        self._uppers = [key_order(b) for b in bounds[1:-1]]
        self.parts = [PendingChanges() for _ in bounds[:-1]]
        if before is not None:  # changes received before the split
            for key, doc in before.changes.items():
                self.record(key, doc)
            for key in before.late:
                self.record_late(key)

    def _part(self, key: KeyText) -> PendingChanges:
        return self.parts[bisect.bisect_left(self._uppers, key_order(key))]

    def record(self, key: KeyText, doc: DocText | None) -> None:
        self._part(key).record(key, doc)

    def record_late(self, key: KeyText) -> None:
        self._part(key).late.add(key)

    @property
    def late(self) -> set[KeyText]:
        return set().union(*(p.late for p in self.parts))


def merge_changes(rows: list[Row], changes: list[tuple[KeyText, DocText | None]]) -> list[Row]:
    """Apply sorted changes (doc None = delete) to sorted rows; the change wins per key."""
    if not changes:
        return rows
    merged: dict[KeyText, DocText | None] = dict(rows)
    merged.update(changes)
    out = [(k, d) for k, d in merged.items() if d is not None]
    out.sort(key=lambda kd: key_order(kd[0]))
    return out


class SegmentWriter:
    """Accepts documents of one key range in order and stores them as segments.

    Up to ``in_flight`` segments are compressed, encrypted and uploaded concurrently while the
    scan goes on; memory is bounded by ``in_flight * max_bytes`` plus the pending changes.
    Documents are kept as the UTF-8 bytes the scan delivered (``add_texts``); they become
    ``str`` only where feed changes are merged into a segment.
    """

    def __init__(
        self, repo: Repository, chunker: Chunker, *, pending: PendingChanges | None = None,
        progress: Progress = NullProgress(), task: str = "", in_flight: int = 4,
    ) -> None:
        self._repo = repo
        self._chunker = chunker
        self._pending = pending or PendingChanges()
        self._progress = progress
        self._task = task
        self._keys: list = []  # UTF-8 key texts (bytes-like) of the open segment
        self._docs: list = []  # UTF-8 document texts
        self._bytes = 0
        self._slots = asyncio.Semaphore(in_flight)
        self._jobs: list[asyncio.Task[SegmentRef]] = []
        self.bytes_new = 0

    async def add(self, rows: list[Row]) -> None:
        """Add ``(key, doc)`` text rows (in key order, after everything added before)."""
        await self.add_texts(*encode_rows(rows))

    async def add_texts(self, keys: Sequence, docs: Sequence) -> None:
        """Add documents given as UTF-8 key and document texts (bytes-like, in key order)."""
        cut_after = self._chunker.cut_after
        min_bytes = self._chunker.params.min_bytes
        size, start, nbytes = self._bytes, 0, 0
        for i, doc in enumerate(docs):
            n = len(doc) + 1
            size += n
            nbytes += n
            if size >= min_bytes and cut_after(keys[i], n, size):
                self._keys.extend(keys[start:i + 1])
                self._docs.extend(docs[start:i + 1])
                await self._seal(bytes(keys[i]).decode())
                size, start = 0, i + 1
        self._keys.extend(keys[start:])
        self._docs.extend(docs[start:])
        self._bytes = size
        self._progress.advance(self._task, len(docs), nbytes)

    async def finish(self, upto: KeyText | None = None) -> list[SegmentRef]:
        """Seal the rest as the range ending at ``upto`` (None: the open end); return every
        segment in key order. An empty range with no changes yields no segment."""
        try:
            await self._seal(upto)
            refs = list(await asyncio.gather(*self._jobs))
            if not refs:  # an empty range is still one (empty) segment: ranges must tile
                await self._slots.acquire()
                refs = [await self._store([], [], upto)]
            elif refs[-1].upto != upto:  # the range's tail had no documents
                refs[-1] = replace(refs[-1], upto=upto)
            return refs
        except BaseException:
            await self.abort()
            raise

    async def abort(self) -> None:
        """Cancel uploads in flight (objects already stored stay: they are reused later)."""
        for job in self._jobs:
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)
        self._jobs.clear()

    async def _seal(self, upto: KeyText | None) -> None:
        keys, docs = self._keys, self._docs
        self._keys, self._docs, self._bytes = [], [], 0
        changes = self._pending.take_upto(upto)
        if changes:
            rows = [(bytes(k).decode(), bytes(d).decode()) for k, d in zip(keys, docs)]
            pieces = [(*encode_rows(piece), piece_upto) for piece, piece_upto
                      in self._rechunk(merge_changes(rows, changes), upto)]
        else:
            pieces = [(keys, docs, upto)]
        for piece_keys, piece_docs, piece_upto in pieces:
            if not piece_docs:
                continue  # its range joins the next segment's (lower bounds are implicit)
            await self._slots.acquire()
            self._jobs.append(asyncio.create_task(self._store(piece_keys, piece_docs, piece_upto)))

    def _rechunk(self, rows: list[Row], upto: KeyText | None) -> list[tuple[list[Row], KeyText | None]]:
        pieces: list[tuple[list[Row], KeyText | None]] = []
        current: list[Row] = []
        size = 0
        for key, doc in rows:
            current.append((key, doc))
            size += len(doc) + 1
            if self._chunker.cut_after(key, len(doc) + 1, size):
                pieces.append((current, key))
                current, size = [], 0
        if current or not pieces:
            pieces.append((current, upto))
        else:
            last_rows, _ = pieces[-1]
            pieces[-1] = (last_rows, upto)
        return pieces

    async def _store(self, keys: Sequence, docs: Sequence, upto: KeyText | None) -> SegmentRef:
        try:
            plaintext, digest, index = await run_cpu(encode_segment, keys, docs)
            stored, stored_index = await asyncio.gather(
                self._repo.put_data(plaintext), self._repo.put_index(index)
            )
            self.bytes_new += sum(o.stored_size for o in (stored, stored_index) if o.new)
            return SegmentRef(stored.id, upto, len(docs), digest, len(plaintext),
                              stored.stored_size, stored_index.id, stored_index.stored_size)
        finally:
            self._slots.release()
