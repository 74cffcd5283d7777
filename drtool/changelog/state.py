"""A table as it was at a time: a base snapshot table with the log's changes applied.

``load_changes`` reads the plan's slices (each authenticated and checked against its name,
table and timeline; a missing or damaged slice is an IntegrityError naming it) and keeps per
key the last version stamped at or before ``at``. ``StateAt`` merges those changes into the
base's documents in key order, range by range, and records per recorded key range of the
base the count and digest of the result (``entry()``: a TableEntry with the base's layers and
the state's ranges, so restore checks the server's digests against it and restore --delta
compares with it).

Memory: the changes up to ``at`` (one entry per changed key), plus two ranges of the base.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator
from dataclasses import replace

from drtool.changelog.slices import decode_slice
from drtool.changelog.timeline import RestorePlan, missing_slice
from drtool.cluster.base import Row
from drtool.snapshots.layers import range_rows
from drtool.snapshots.segments import decode_segment
from drtool.reql.digest import digest_of_hashes, fold_digests, r_uuid
from drtool.errors import IntegrityError, ObjectNotFound
from drtool.repo.manifest import Range, TableEntry
from drtool.model import DocText, KeyText
from drtool.reql.ordering import key_order
from drtool.repo.repository import Repository

Changes = list[tuple[bytes, KeyText, DocText | None]]  # (key order, key, text or None), sorted


async def load_changes(repo: Repository, plan: RestorePlan) -> Changes:
    """The last change of each key stamped at or before ``plan.at`` in the plan's slices."""
    state: dict[KeyText, DocText | None] = {}
    for ref in plan.slices:
        try:
            plaintext = await repo.get_slice(ref.name)
        except ObjectNotFound:
            raise missing_slice(ref.name, plan.at) from None
        header, entries = decode_slice(ref.name, plaintext)
        if header.table != str(plan.table) or header.timeline != plan.timeline:
            raise IntegrityError(f"slice {ref.name} belongs to another table or timeline")
        for stamp, key, doc in entries:  # sorted by key, then stamp: the last one wins
            if stamp <= plan.at:
                state[key] = doc
    return sorted(((key_order(k), k, d) for k, d in state.items()), key=lambda c: c[0])


class StateAt:
    """The base table ``base`` with ``changes`` applied, one recorded key range at a time
    (see module docstring). A range no change falls in is the base's: its documents are
    streamed as stored (no key is parsed, its recorded count and digest stand); a range with
    changes is merged by key and hashed."""

    def __init__(self, repo: Repository, base: TableEntry, changes: Changes) -> None:
        self.repo, self.base, self.changes = repo, base, changes
        self._orders = [c[0] for c in changes]
        self._ranges: list[Range | None] = [None] * len(base.ranges)
        self._plain = (len(base.layers) == 1 and not base.layers[0].deletions
                       and [s.upto for s in base.layers[0].segments]
                       == [r.upto for r in base.ranges])

    def _changes_in(self, i: int) -> Changes:
        lo, hi = (self.base.ranges[i - 1].upto if i else None), self.base.ranges[i].upto
        first = 0 if lo is None else bisect.bisect_right(self._orders, key_order(lo))
        last = len(self._orders) if hi is None else bisect.bisect_right(self._orders,
                                                                        key_order(hi))
        return self.changes[first:last]

    async def _range_texts(self, i: int) -> list[DocText]:
        """Range ``i`` of the state; records its count and digest."""
        mine = self._changes_in(i)
        if not mine:
            self._ranges[i] = self.base.ranges[i]
            if self._plain:
                return decode_segment(await self.repo.get_data(self.base.layers[0].segments[i].id))
            return [d for _, d in await range_rows(self.repo, self.base, i)]
        rows = _apply(await range_rows(self.repo, self.base, i), mine)
        texts = [d for _, d in rows]
        self._ranges[i] = Range(self.base.ranges[i].upto, len(texts),
                                digest_of_hashes(r_uuid(t) for t in texts))
        return texts

    async def texts(self) -> AsyncIterator[tuple[str, list[DocText]]]:
        """The state's documents in key order, one range at a time (the next one fetched
        while the caller writes this one); ``entry()`` is valid once this is exhausted."""
        n = len(self.base.ranges)
        ahead = asyncio.create_task(self._range_texts(0)) if n else None
        try:
            for i in range(n):
                texts = await ahead
                ahead = asyncio.create_task(self._range_texts(i + 1)) if i + 1 < n else None
                yield "", texts
        finally:
            if ahead is not None:
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)

    def entry(self) -> TableEntry:
        if any(r is None for r in self._ranges):
            raise RuntimeError("StateAt.entry() before its texts were read")
        ranges = tuple(self._ranges)  # type: ignore[arg-type]
        return replace(self.base, ranges=ranges, doc_count=sum(r.count for r in ranges),
                       digest=fold_digests(r.digest for r in ranges))

    async def range_rows(self, i: int) -> list[Row]:
        """The state's documents of recorded range ``i``, in key order."""
        return _apply(await range_rows(self.repo, self.base, i), self._changes_in(i))


def _apply(rows: list[Row], changes: Changes) -> list[Row]:
    if not changes:
        return rows
    state = dict(rows)
    for _, key, doc in changes:
        if doc is None:
            state.pop(key, None)
        else:
            state[key] = doc
    return sorted(state.items(), key=lambda row: key_order(row[0]))


async def state_entry(state: StateAt) -> TableEntry:
    """Read the whole state once (client-side: decrypting the base) to learn its ranges."""
    async for _ in state.texts():
        pass
    return state.entry()


