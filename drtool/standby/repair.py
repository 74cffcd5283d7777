"""Gap repair of one table by a streaming merge of per-document hashes.

Both sides stream ``(key, r.uuid(doc text))`` pairs in key order (``Cluster.hash_scan``, one
pass each, resumable, in parallel); the merge yields the keys that are missing, extra or
changed on the target, and those are repaired in batches: the source's current documents
are written (``conflict='replace'``, write hook bypassed; keys gone from the source meanwhile
are deleted) and extra keys deleted. Only hashes and the differing documents cross the
network; memory holds one batch, whatever the table size.

Why not always the digest search of ``drtool diff`` (drtool.compare.reconcile)? A repair runs
while the application writes, and every level of that search is a round trip during which
new differences appear: measured on the real server with a writer doing ~1,000 writes/s into
a 100,000-document table, the search took 162 s and 23.8 MB, while this merge is one pass
(~72 bytes per document and side). The runner uses the digest search for large tables that
are quiet (where it moves kilobytes), this merge otherwise (see ``TableReplicator``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

from drtool.cluster.base import Cluster
from drtool.cluster.scanning import resumable_scan
from drtool.errors import ClusterError
from drtool.model import KeyText, TableName
from drtool.reql.ordering import key_order

PAIR_BYTES = 72  # a [key, uuid] pair on the wire, for the byte estimate


@dataclass
class MergeRepair:
    differing: int = 0
    written: int = 0
    deleted: int = 0
    read: int = 0  # documents read from the source
    bytes: int = 0


async def _pairs(cluster: Cluster, table: TableName, out: MergeRepair,
                 batch_size: int) -> AsyncIterator[tuple[bytes, KeyText, str]]:
    scan = resumable_scan(cluster, table, hashes=True, batch_size=batch_size)
    async with aclosing(scan):
        async for rows in scan:
            out.bytes += PAIR_BYTES * len(rows)
            for key, digest in rows:
                yield key_order(key), key, digest


async def merge_repair(source: Cluster, target: Cluster, table: TableName, *,
                       batch_size: int = 1000, scan_batch: int = 5000) -> MergeRepair:
    """Make ``table`` on ``target`` equal to ``source``'s as of the scans (see module doc).
    Raises ClusterUnreachable, ClusterError (a refused write)."""
    out = MergeRepair()
    pending: list[KeyText] = []  # keys to copy from the source
    extra: list[KeyText] = []  # keys to delete on the target

    async def flush(final: bool = False) -> None:
        if pending and (final or len(pending) >= batch_size):
            keys = pending[:]
            pending.clear()
            rows = await source.get_docs(table, keys)
            out.read += len(rows)
            out.bytes += sum(len(k) + len(d) for k, d in rows)
            present = {key_order(k) for k, _ in rows}
            extra.extend(k for k in keys if key_order(k) not in present)
            if rows:
                result = await target.insert_texts(table, [d for _, d in rows],
                                                   conflict="replace", ignore_write_hook=True)
                if result.errors or result.written != len(rows):
                    raise ClusterError(f"repairing {table} on {target.description}: "
                                       f"{result.first_error or 'not every document written'}")
                out.written += result.inserted + result.replaced
        if extra and (final or len(extra) >= batch_size):
            keys = extra[:]
            extra.clear()
            result = await target.delete_keys(table, keys, ignore_write_hook=True)
            if result.errors:
                raise ClusterError(f"repairing {table} on {target.description}: "
                                   f"{result.first_error}")
            out.deleted += result.deleted

    src = _pairs(source, table, out, scan_batch)
    tgt = _pairs(target, table, out, scan_batch)
    async with aclosing(src), aclosing(tgt):
        s = await anext(src, None)
        t = await anext(tgt, None)
        while s is not None or t is not None:
            if t is None or (s is not None and s[0] < t[0]):
                pending.append(s[1])  # missing on the target
                s = await anext(src, None)
            elif s is None or t[0] < s[0]:
                extra.append(t[1])  # only on the target
                t = await anext(tgt, None)
            else:
                changed = s[2] != t[2]
                if changed:
                    pending.append(s[1])
                s, t = await asyncio.gather(anext(src, None), anext(tgt, None))
                if not changed:
                    continue
            out.differing += 1
            if len(pending) >= batch_size or len(extra) >= batch_size:
                await flush()
    await flush(final=True)
    return out
