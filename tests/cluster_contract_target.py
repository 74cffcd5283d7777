"""What a contract test runs against (``ContractTarget``) and the helpers the suite shares.

A test module using the suite (``tests.cluster_contract``) defines a ``cluster`` fixture that
yields a ContractTarget: a connected Cluster, a fresh uniquely named database the fixture
created (and drops afterwards), and two blob makers (only a real server can compile a ReQL
function: the real fixture makes blobs with the driver on a scratch table, the fake one with
``FakeServer.index_blob``/``hook_blob``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from drtool.cluster.base import Cluster
from drtool.reql.digest import fold, r_uuid
from drtool.model import TableName

FEED_TIMEOUT = 10.0


@dataclass
class ContractTarget:
    """A connected Cluster and a fresh database ``db`` of its own, for one contract test."""

    cluster: Cluster
    db: str
    make_index_blob: Callable[[str], Awaitable[bytes]]  # blob of an index on that field
    make_hook_blob: Callable[[], Awaitable[bytes]]  # blob of an identity write hook
    fake: object | None = None  # the FakeServer, for fake-only tests
    #: connect to the same cluster as another user: ``await connect_as(user, password)``
    connect_as: Callable[[str, str], Awaitable[Cluster]] | None = None

    async def new_table(self, primary_key: str = "id") -> TableName:
        """Create a uniquely named table (1 shard, 1 replica) in ``db``."""
        name = TableName(self.db, "t_" + uuid.uuid4().hex[:10])
        await self.cluster.create_table(name, primary_key=primary_key, shards=1, replicas=1)
        return name


async def collect(aiter) -> list:
    """Every row of an iterator of batches (scan, hash_scan), in order."""
    return [row for batch in [b async for b in aiter] for row in batch]


def expected_chunks(rows: list, threshold: str, upto) -> list:
    """chunk_digests of ``rows`` by the contract, computed independently: a chunk ends after
    each key whose r.uuid is below the threshold; the next one folds from that key's hash."""
    chunks, seed, texts = [], "", []
    for key, text in rows:
        texts.append(text)
        if r_uuid(key) < threshold:
            chunks.append((key, len(texts), fold(texts, seed)))
            seed, texts = r_uuid(key), []
    return chunks + [(upto, len(texts), fold(texts, seed))]


async def next_event(feed):
    """The next event of a changefeed; TimeoutError after FEED_TIMEOUT seconds."""
    return await asyncio.wait_for(feed.__anext__(), FEED_TIMEOUT)
