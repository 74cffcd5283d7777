"""The cluster interface: everything drtool asks of a RethinkDB cluster.

Two implementations: ``drtool.cluster.rethink.connect`` (the real server; its ``rethink*`` modules are
the only ones that import ``rethinkdb``) and ``drtool.cluster.fake`` (in memory, for tests and
benches). One contract suite (tests/cluster_contract.py) runs against both; behaviour is
defined by the real server as recorded in ``shared/reql-facts.md``.

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
from collections.abc import AsyncIterator, Mapping, Sequence

from drtool.cluster.values import (  # noqa: F401 (the interface's values, re-exported)
    ALWAYS, DEFAULT_FEED_QUEUE, PER_DOC, SEGMENT_DIGEST_QUERIES, ChunkDigest, ConflictMode, Guard,
    KeyRange, Row, StateWrite, TextBatch, Window, chunk_spec, fold_chunks, segment_digest_groups,
)
from drtool.reql.digest import digest_of_hashes
from drtool.model import (
    DocText,
    FeedEvent,
    IndexDef,
    KeyText,
    PermissionRow,
    TableMeta,
    TableName,
    UserInfo,
    WriteResult,
)

#: replicas of drtool's own (state) tables when the cluster has that many servers
STATE_REPLICAS = 3
#: seconds ``ensure_table`` waits for a table to be ready for writes
STATE_READY_TIMEOUT = 20.0

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

    async def key_bounds(self, table: TableName) -> tuple[KeyText, KeyText] | None:
        """The first and the last key of the table in key order (None: the table is empty).
        Cheap on the server (two index lookups). This default scans; adapters override it."""
        first = last = None
        async for rows in self.scan(table):
            first = first or rows[0][0]
            last = rows[-1][0]
        return None if first is None else (first, last)

    async def scan_texts(
        self, table: TableName, *, after: KeyText | None = None, upto: KeyText | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[TextBatch]:
        """``scan`` with each batch as a ``TextBatch`` of UTF-8 texts (the snapshot's hot
        path: no ``str`` per document). Same order, ranges, batch bound and errors as
        ``scan``. This default encodes ``scan``'s rows; adapters override it."""
        async for rows in self.scan(table, after=after, upto=upto, batch_size=batch_size):
            yield TextBatch([k.encode() for k, _ in rows], [d.encode() for _, d in rows])

    async def segment_digests(
        self, table: TableName, ranges: Sequence[KeyRange]
    ) -> list[tuple[int, str]]:
        """For each range ``(after, upto]``: its document count and its *segment digest*,
        ``r.uuid`` of the JSON text of the array of ``r.uuid(doc.to_json_string())`` of its
        documents in key order (``r.uuid('[]')`` for an empty range): the digest a snapshot
        records for its ranges (docs/FORMAT.md §6.2). Only counts and digests cross the
        network. This default computes it from ``hash_scan``; adapters compute it on the
        server."""
        out = []
        for after, upto in ranges:
            hashes = [h async for batch in self.hash_scan(table, after=after, upto=upto)
                      for _, h in batch]
            out.append((len(hashes), digest_of_hashes(hashes)))
        return out

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
        self, table: TableName, ranges: Sequence[KeyRange], *, threshold: str,
        windows: Sequence[Window] | None = None, keys: bool = True, digest_chars: int = 36,
    ) -> list[list[ChunkDigest]]:
        """For each range ``(after, upto]``, the digests of its consecutive chunks, all ranges
        in ONE server-side query; only keys, counts and digests cross the network.

        ``windows`` (one ``(skip, limit)`` per range): only the documents at positions
        ``skip .. skip+limit-1`` after the range's ``after`` (in key order, from 0) are
        chunked, and the range's ``upto`` is neither used nor sent (a window is meant to lie
        within its range); without windows, the whole range. A chunk ends after every document whose key hash ``r.uuid(key
        text)`` is less than ``threshold`` (plain string comparison of the 36-character hash),
        and the last chunk ends at the end of the range or window. Each chunk is ``(upto,
        count, digest)``: its inclusive upper bound (the cutting document's key, or the
        range's own ``upto`` for the last chunk; always None when ``keys`` is False, and then
        no key crosses the network), its number of documents and its fold digest. The last
        chunk is always present, possibly empty.

        The fold is ``acc = r.uuid(acc + doc text)``. The first chunk starts from ``''``; a
        chunk after a cut starts from the cutting key's hash, so equal digests mean the same
        documents AND the same preceding key (two chunks are identical only if they start
        after the same key). An empty chunk's digest is its starting value. Exceptions:
        ``threshold=''`` gives one chunk per range (its ``range_digest`` and count);
        ``threshold='g'`` (``PER_DOC``) cuts after every document and every chunk starts
        from ``''``, so each digest is ``r.uuid(doc text)`` as in ``hash_scan`` and the empty
        last chunk's is ``''``. Cut points depend only on keys: two tables holding the same
        key cut there both. An expected chunk size of ``m`` documents is ``threshold =
        '%08x' % (2**32 // m)``.

        ``digest_chars < 36``: each digest is cut to its LAST ``digest_chars`` characters
        (``r.uuid(...).slice(36 - digest_chars)``; ``''`` stays ``''``): fewer bytes, and
        the leading hex digits, which the threshold biases for cut keys, are dropped.

        This default computes the same result client-side from ``scan`` (it moves every
        document); adapters override it with a server-side fold."""
        out: list[list[ChunkDigest]] = []
        for n, (after, upto) in enumerate(ranges):
            if windows is None:
                rows = [row async for batch in self.scan(table, after=after, upto=upto)
                        for row in batch]
            else:
                skip, limit = windows[n]
                rows = []
                async for batch in self.scan(table, after=after):
                    rows.extend(batch)
                    if len(rows) >= skip + limit:
                        break
                rows = rows[skip:skip + limit]
            out.append(fold_chunks(rows, upto, threshold, keys, digest_chars))
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
        durability: str = "hard", write_acks: str = "majority",
    ) -> None:
        """Create a table (the database must exist) with these settings (``write_acks``:
        "majority" or "single"). Raises ClusterError if it exists."""

    @abstractmethod
    async def ensure_table(self, table: TableName, *, primary_key: str = "id") -> bool:
        """Create the database and a one-shard table where missing, with one replica per
        connected server up to STATE_REPLICAS; an existing table with fewer replicas than
        that is reconfigured to it (servers were added; best effort: refused while a server
        is down, tried again by the next call). Return True if this call created the table. Safe when several processes call it at once: the
        server can create two databases or tables of one name when creations race (observed
        on 2.4.4: "Table `d.t` is ambiguous; there are multiple tables with that name"), so
        duplicates are removed, every caller keeping the same one (the smallest id). Waits
        until the table is ready for writes (a majority of its replicas answer; not all of
        them, which never happens while a server is down), at most STATE_READY_TIMEOUT
        seconds, then raises ClusterUnreachable naming the table. For drtool's own small
        tables, not for user data."""

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

    @abstractmethod
    async def set_rejecting_write_hook(self, table: TableName, message: str) -> None:
        """Set a write hook on the table that refuses every write (insert, update, replace,
        delete) with ``message``: such a write comes back in its WriteResult as an error,
        ``first_error == "Error in write hook: " + message`` (not as an exception), for every
        user including admin. Writes with ``ignore_write_hook=True`` (the config permission
        needed) still go through. Replaces any existing hook: read ``table_meta().write_hook``
        first to restore it later with ``set_write_hook``. Idempotent."""

    # --- users and permissions (need the admin user) -----------------------------------
    @abstractmethod
    async def list_users(self) -> list[UserInfo]:
        """Every user (``rethinkdb.users``), sorted by name, admin included. Passwords are
        never returned, only whether one is set. Raises PermissionDenied for a user without
        read permission on the ``rethinkdb`` database (a global read grant is not enough)."""

    @abstractmethod
    async def list_permissions(self) -> list[PermissionRow]:
        """Every row of ``rethinkdb.permissions`` (global, database and table scopes; admin's
        rows included), sorted by (user, db, table). Raises PermissionDenied like
        ``list_users``."""

    @abstractmethod
    async def grant(self, user: str, permissions: dict[str, bool | None], *,
                    db: str | None = None, table: str | None = None
                    ) -> tuple[dict | None, dict | None]:
        """Set ``user``'s overrides at one scope: global (no ``db``), database ``db``, or table
        ``db.table``. A value of None removes that override; keys not named keep their value.
        Returns ``(old, new)``: the scope's overrides before and after (None for no row).
        Atomic per scope and idempotent. Raises NotFound for an unknown user, database or
        table, ClusterError for the ``admin`` user (its permissions cannot be changed)."""

    @abstractmethod
    async def ensure_user(self, user: str, password: str) -> bool:
        """Create ``user`` with ``password``, or set the password of an existing user.
        Returns True when the user was created. The password never appears in an error."""

    @abstractmethod
    async def drop_user(self, user: str) -> None:
        """Delete a user and its permission rows; a missing user is not an error."""

    # --- drtool's state: atomic, guarded writes on the server's clock ----------------------
    @abstractmethod
    async def server_time(self) -> float:
        """The server's clock now (``r.now()``, epoch seconds). Every time drtool stores or
        compares in its state database (leases, heartbeats, lag) comes from a server's clock,
        never the client's. Raises ClusterUnreachable."""

    @abstractmethod
    async def write_state(self, table: TableName, key: KeyText, doc: DocText | None,
                          guard: Guard, *, now_fields: Mapping[str, float] | None = None
                          ) -> StateWrite:
        """Replace the document ``key`` of ``table`` by ``doc`` (None: delete it) when
        ``guard`` passes on its current value, in ONE atomic server-side step (compare-and-set:
        two writers never both pass a guard on the same old value). ``now_fields``: fields set
        to the server's ``r.now()`` plus that many seconds in the same step. Durable before it
        returns (hard durability). Returns the StateWrite: applied or not, the document now
        stored, the server's time of the step. Raises NotFound (table missing), ClusterError
        (the server refused the write), ClusterUnreachable."""

    # --- changefeeds ----------------------------------------------------------------------
    @abstractmethod
    def changes(self, table: TableName, *, queue_size: int = DEFAULT_FEED_QUEUE,
                gather: float = 0.0) -> AsyncIterator[FeedEvent]:
        """Open a changefeed on its own connection. Yields FeedReady first (every write after
        it is delivered), then FeedChange(key, doc-or-None) in per-key order, and
        FeedOverflow when the server dropped changes (the feed then continues; what was
        skipped is lost). ``queue_size``: changes the server keeps for a slow reader before
        dropping. ``gather`` > 0 (seconds): the next batch is asked for at most that often, so
        the changes made meanwhile come in one answer: far fewer answers for a trickle of
        changes, every change still delivered, for up to ``gather`` seconds more delay. (Not
        RethinkDB's numeric ``squash``: it drops a document created and deleted within one
        answer, which loses the delete for a reader whose copy saw the document.) Closing
        the iterator (``aclose``) closes the feed."""

    # --- lifecycle ------------------------------------------------------------------------
    @abstractmethod
    async def close(self) -> None:
        """Close every connection. Idempotent."""

    async def __aenter__(self) -> "Cluster":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
