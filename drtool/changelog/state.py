"""A table as it was at a time: a base snapshot table with the log's changes applied.

``load_changes`` reads the plan's slices (each authenticated and checked against its name,
table and timeline; a missing or damaged slice is an IntegrityError naming it) and keeps per
key the last version stamped at or before ``at``. ``StateAt`` merges those changes into the
base's documents in key order and records, per recorded key range of the base, the count and
digest of the result (``entry()``: a TableEntry with the base's layers and the state's ranges,
so restore checks the server's digests against it and restore --delta compares with it).

Memory: the changes up to ``at`` (one entry per changed key), plus one base run at a time.
"""

from __future__ import annotations

import bisect
from collections.abc import AsyncIterator
from dataclasses import replace

from drtool.changelog.slices import decode_slice
from drtool.changelog.timeline import RestorePlan, missing_slice
from drtool.cluster.base import Row
from drtool.core.layers import merged_rows, range_rows
from drtool.digest import digest_of_hashes, fold_digests, r_uuid
from drtool.errors import IntegrityError, ObjectNotFound
from drtool.manifest import Range, TableEntry
from drtool.model import DocText, KeyText
from drtool.ordering import key_order
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
    """The base table ``base`` with ``changes`` applied (see module docstring)."""

    def __init__(self, repo: Repository, base: TableEntry, changes: Changes) -> None:
        self.repo, self.base, self.changes = repo, base, changes
        self._uppers = [key_order(r.upto) for r in base.ranges[:-1]]
        self._counts = [0] * len(base.ranges)
        self._hashes: list[list[str]] = [[] for _ in base.ranges]
        self.done = False

    def _range_of(self, order: bytes) -> int:
        return bisect.bisect_left(self._uppers, order)

    async def texts(self) -> AsyncIterator[tuple[str, list[DocText]]]:
        """The state's documents in key order, in runs; counts and digests recorded as they
        pass (``entry()`` is valid once this is exhausted)."""
        changes, c = self.changes, 0
        async for rows in merged_rows(self.repo, self.base):
            out: list[tuple[bytes, DocText]] = []
            for key, text in rows:
                order = key_order(key)
                while c < len(changes) and changes[c][0] < order:
                    if changes[c][2] is not None:
                        out.append((changes[c][0], changes[c][2]))
                    c += 1
                if c < len(changes) and changes[c][0] == order:
                    if changes[c][2] is not None:
                        out.append((order, changes[c][2]))
                    c += 1
                else:
                    out.append((order, text))
            yield "", self._account(out)
        tail = [(o, d) for o, _, d in changes[c:] if d is not None]
        if tail:
            yield "", self._account(tail)
        self.done = True

    def _account(self, out: list[tuple[bytes, DocText]]) -> list[DocText]:
        for order, text in out:
            i = self._range_of(order)
            self._counts[i] += 1
            self._hashes[i].append(r_uuid(text))
        return [text for _, text in out]

    def entry(self) -> TableEntry:
        if not self.done:
            raise RuntimeError("StateAt.entry() before its texts were read")
        ranges = tuple(Range(r.upto, n, digest_of_hashes(h))
                       for r, n, h in zip(self.base.ranges, self._counts, self._hashes))
        return replace(self.base, ranges=ranges, doc_count=sum(self._counts),
                       digest=fold_digests(r.digest for r in ranges))

    async def range_rows(self, i: int) -> list[Row]:
        """The state's documents of recorded range ``i``, in key order."""
        lo = self.base.ranges[i - 1].upto if i else None
        hi = self.base.ranges[i].upto
        lo_o = None if lo is None else key_order(lo)
        hi_o = None if hi is None else key_order(hi)
        start = 0 if lo_o is None else bisect.bisect_right(self.changes, (lo_o, "\uffff"))
        mine = []
        for change in self.changes[start:]:
            if hi_o is not None and change[0] > hi_o:
                break
            if lo_o is None or change[0] > lo_o:
                mine.append(change)
        rows = await range_rows(self.repo, self.base, i)
        if not mine:
            return rows
        state = dict(rows)
        for _, key, doc in mine:
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


