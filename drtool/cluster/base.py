"""The cluster interface: everything drtool asks of a RethinkDB cluster.

Two implementations: ``drtool.cluster.rethink`` (the real server, the only module that imports
``rethinkdb``) and ``drtool.cluster.fake`` (in memory, for tests and benches). One contract
suite (tests/cluster_contract.py) runs against both; behaviour is defined by the real server as
recorded in ``shared/reql-facts.md``.

Conventions:
* Keys are ``KeyText`` (canonical JSON text of the key, see drtool.model); documents are
  ``DocText`` (the server's ``to_json_string()``). Data never round-trips through Python dicts.
* Ranges are ``(lo, hi]``-style with explicit bounds: ``after`` is exclusive, ``upto`` is
  inclusive; ``None`` means the open end (r.minval / r.maxval). Half-open ranges make segment
  ranges of a snapshot line up exactly with server queries.
* Order is the server's primary-key order (arrays < booleans < numbers < BINARY < TIME <
  strings; strings by UTF-8 bytes).
* Errors: ClusterUnreachable (retryable: connection lost, timeout), AuthError (wrong user or
  password), NotFound (db/table missing), ClusterError (anything else the server refuses).
  Driver exceptions never escape.
* Every method may be called concurrently; implementations keep what they need (connection
  pool, one connection per changefeed).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Literal

from drtool.digest import r_uuid
from drtool.model import (
    DocText,
    FeedEvent,
    IndexDef,
    KeyText,
    TableMeta,
    TableName,
    WriteResult,
)

ConflictMode = Literal["error", "replace", "skip"]
Row = tuple[KeyText, DocText]
KeyRange = tuple[KeyText | None, KeyText | None]  # (after, upto]
ChunkDigest = tuple[KeyText | None, int, str]  # (upto, document count, fold digest)


class Cluster(ABC):
    """A connected cluster. Obtain one with ``drtool.cluster.connect(config)``."""

    #: For messages: role and the host actually connected, e.g. "primary 10.0.0.5:28015".
    description: str = ""

    # --- catalogue ------------------------------------------------------------------------
    @abstractmethod
    async def list_tables(self) -> list[TableName]:
        """All tables of all databases except the ``rethinkdb`` system database, sorted."""

    @abstractmethod
    async def table_meta(self, table: TableName) -> TableMeta:
        """Primary key, shard/replica counts, write_acks, durability, index blobs, hook blob.

        Raises NotFound if the table does not exist."""

    @abstractmethod
    async def doc_count_estimate(self, table: TableName) -> int:
        """Cheap estimate (sum of ``info()['doc_count_estimates']``); never a full count."""

    # --- reading --------------------------------------------------------------------------
    @abstractmethod
    def scan(
        self, table: TableName, *, after: KeyText | None = None, upto: KeyText | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[list[Row]]:
        """Stream ``(key, doc)`` rows with ``after < key <= upto`` in primary-key order, in
        lists of at most ``batch_size``. One streaming query (no per-page round trips). If the
        connection drops the iterator raises ClusterUnreachable; callers resume with
        ``after=<last key received>`` (keyset pagination) instead of starting over."""

    @abstractmethod
    async def range_digest(
        self, table: TableName, *, after: KeyText | None = None, upto: KeyText | None = None
    ) -> str:
        """Server-side fold of the range: ``acc = r.uuid(acc + doc.to_json_string())`` over the
        documents in key order, starting from ``''`` (so an empty range gives ``''``). Only
        the 36-character result crosses the network."""

    @abstractmethod
    def hash_scan(
        self, table: TableName, *, after: KeyText | None = None, upto: KeyText | None = None,
        batch_size: int = 5000,
    ) -> AsyncIterator[list[tuple[KeyText, str]]]:
        """Stream ``(key, r.uuid(doc.to_json_string()))`` pairs of the range in key order."""

    async def chunk_digests(
        self, table: TableName, ranges: Sequence[KeyRange], *, threshold: str
    ) -> list[list[ChunkDigest]]:
        """For each range ``(after, upto]``, the digests of its consecutive chunks, all ranges
        in ONE server-side query; only keys, counts and digests cross the network.

        A chunk ends after every document whose key hash ``r.uuid(key text)`` is less than
        ``threshold`` (plain string comparison of the 36-character hash), and the range's last
        chunk ends at the range's ``upto``. Each chunk is ``(upto, count, digest)``: its
        inclusive upper bound (the cutting document's key, or the range's own ``upto`` for the
        last chunk), its number of documents and the ``range_digest`` fold over them. The last
        chunk is always present (count 0, digest ``''`` when the range is empty or its last
        document cuts). So the chunks tile the range and cut points depend only on keys: two
        tables holding the same key cut there both. ``threshold=''`` gives one chunk per range
        (its ``range_digest`` and count); ``threshold='g'`` cuts after every document, whose
        digest is then ``r.uuid(doc text)`` (``hash_scan``). An expected chunk size of ``m``
        documents is ``threshold = '%08x' % (2**32 // m)``.

        This default computes the same result client-side from ``scan`` (it moves every
        document); adapters override it with a server-side fold."""
        out: list[list[ChunkDigest]] = []
        for after, upto in ranges:
            chunks: list[ChunkDigest] = []
            acc, count = "", 0
            async for rows in self.scan(table, after=after, upto=upto):
                for key, doc in rows:
                    acc, count = r_uuid(acc + doc), count + 1
                    if r_uuid(key) < threshold:
                        chunks.append((key, count, acc))
                        acc, count = "", 0
            chunks.append((upto, count, acc))
            out.append(chunks)
        return out

    @abstractmethod
    async def get_docs(self, table: TableName, keys: Sequence[KeyText]) -> list[Row]:
        """The current documents for ``keys`` (missing keys are left out), in key order."""

    # --- writing --------------------------------------------------------------------------
    @abstractmethod
    async def insert_texts(
        self, table: TableName, docs: Sequence[DocText], *, conflict: ConflictMode = "error",
        ignore_write_hook: bool = False,
    ) -> WriteResult:
        """Insert a batch from text (``insert(r.json('[...]'))``) with soft durability.

        ``conflict``: "error" leaves existing documents alone and counts each as an error;
        "replace" overwrites; "skip" keeps the existing document (counted as unchanged).
        Per-document failures come back in the result (errors, first_error), not as
        exceptions, exactly as the server reports them. Call ``sync`` when done."""

    @abstractmethod
    async def delete_keys(
        self, table: TableName, keys: Sequence[KeyText], *, ignore_write_hook: bool = False
    ) -> WriteResult:
        """Delete the documents with these keys (missing keys are not errors)."""

    @abstractmethod
    async def sync(self, table: TableName) -> None:
        """Flush soft-durability writes of the table to disk."""

    # --- schema ---------------------------------------------------------------------------
    @abstractmethod
    async def ensure_db(self, db: str) -> bool:
        """Create the database if missing; return True if it was created."""

    @abstractmethod
    async def create_table(
        self, table: TableName, *, primary_key: str, shards: int, replicas: int,
        durability: str = "hard",
    ) -> None:
        """Create a table (the database must exist). Raises ClusterError if it exists."""

    @abstractmethod
    async def drop_table(self, table: TableName) -> None:
        """Drop a table; a missing table is not an error."""

    @abstractmethod
    async def drop_db(self, db: str) -> None:
        """Drop a database and its tables; a missing database is not an error."""

    @abstractmethod
    async def create_index(self, table: TableName, index: IndexDef) -> None:
        """Create an index from its blob (``index_create(name, r.binary(blob))``)."""

    @abstractmethod
    async def drop_index(self, table: TableName, name: str) -> None:
        """Drop a secondary index."""

    @abstractmethod
    async def wait_indexes(self, table: TableName) -> None:
        """Wait until every secondary index of the table is ready (``index_wait``)."""

    @abstractmethod
    async def set_write_hook(self, table: TableName, blob: bytes | None) -> None:
        """Set the write hook from its blob, or remove it with None."""

    # --- changefeeds ----------------------------------------------------------------------
    @abstractmethod
    def changes(self, table: TableName) -> AsyncIterator[FeedEvent]:
        """Open a changefeed on its own connection. Yields FeedReady first (every write after
        it is delivered), then FeedChange(key, doc-or-None) in per-key order, and
        FeedOverflow when the server dropped changes (the feed then continues; what was
        skipped is lost). Closing the iterator (``aclose``) closes the feed."""

    # --- lifecycle ------------------------------------------------------------------------
    @abstractmethod
    async def close(self) -> None:
        """Close every connection. Idempotent."""

    async def __aenter__(self) -> "Cluster":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
