"""In-memory fake RethinkDB cluster for tests and benches, behaving like the real server.

Register a server under a host name and ``drtool.cluster.connect`` serves that host from it::

    server = FakeServer(users={"admin": "", "app": "pw"})
    register("primary:28015", server)
    cluster = await connect(ClusterConfig("primary", ("primary:28015",)))

Behaviour follows shared/reql-facts.md and shared/reql-golden.json: documents are stored as
the server's canonical text (``drtool.cluster.canonical``) in the server's primary-key order
(``drtool.ordering``); per-document write failures come back in the WriteResult with the
server's exact ``first_error`` texts; changefeeds yield FeedReady, then every change, and
FeedOverflow with the server's message when the consumer falls behind. What the fake cannot
do: evaluate index functions or write hooks (blobs are stored opaque; a hooked write is
counted in ``hooked_writes`` and stored unchanged, except that the rejecting hook of
``set_rejecting_write_hook`` refuses it), read permissions on user tables;
``doc_count_estimate`` is exact. Write and config permissions are enforced
(drtool.cluster.fake_users).

Test hooks on ``FakeServer`` (all synchronous, effective immediately):
* ``down = True``: ``connect`` and every call on open clusters raise ClusterUnreachable naming
  the hosts; open changefeeds raise it too. Set back to False to "restore the network".
* ``fail_scan_after(n_rows)``: the next ``scan`` or ``hash_scan`` delivers ``n_rows`` rows,
  then raises ClusterUnreachable (resume with ``after=<last key>``).
* ``fail_next(method, error=None, times=1)``: the next ``times`` calls of that Cluster method
  (e.g. "insert_texts") raise ``error`` (default ClusterUnreachable) before doing anything.
* ``on_scan_row(callback)``: ``callback(table, key)`` (sync or async) runs after each row a
  scan/hash_scan delivered, before the next batch is read: write from it to simulate writes
  landing in the middle of a scan. ``on_scan_row(None)`` removes it.
* ``put_texts(table, texts)`` / ``delete(table, keys)``: direct writes (conflict=replace),
  seen by changefeeds, e.g. the "application" writing to a primary.
* ``force_feed_overflow(table, skipped=44)``: every open feed of the table gets a
  FeedOverflow(skipped) at its current position. ``changefeed_queue_size`` (default 100000)
  bounds each feed's unread changes; beyond it changes are dropped and reported.
* ``drop_feeds(table=None, error=None)``: open feeds end with ClusterUnreachable (or error).
* ``texts(table)``: the stored canonical texts in key order; ``table_obj(table)`` the raw store.
* ``index_blob(text)`` / ``hook_blob(text)``: opaque blobs shaped like the server's.
"""

from __future__ import annotations

import inspect
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence

from drtool.cluster import canonical
from drtool.cluster.base import (
    DEFAULT_FEED_QUEUE, ChunkDigest, Cluster, ConflictMode, Guard, KeyRange, Row, StateWrite,
    Window, fold_chunks,
)
from drtool.cluster.fake_schema import HOOK_PREFIX, INDEX_PREFIX, FakeSchemaMixin
from drtool.cluster.fake_users import ADMIN_ROWS, FakeUsersMixin, hook_refusal
from drtool.cluster.rethink_util import auth_message, unreachable_message  # same wording
from drtool.cluster.fake_store import OVERFLOW_MESSAGE, FeedQueue, Table  # noqa: F401 (re-export)
from drtool.digest import digest_of_hashes, fold, r_uuid
from drtool.errors import AuthError, ClusterError, ClusterUnreachable, DrtoolError, NotFound
from drtool.model import (
    ClusterConfig, FeedEvent, FeedReady, IndexDef, KeyText, TableMeta,
    TableName, WriteResult,
)
from drtool.ordering import InvalidKey, key_bytes, key_order, parse_key

_TRUNC_LEN = 300

_REGISTRY: dict[str, "FakeServer"] = {}


def register(host: str, server: "FakeServer") -> None:
    """Serve ``host`` (as written in ClusterConfig.hosts, e.g. "a:28015") from ``server``."""
    _REGISTRY[host] = server


def unregister(host: str) -> None:
    _REGISTRY.pop(host, None)


def lookup(hosts: Iterable[str]) -> "FakeServer | None":
    """The fake server registered for the first of ``hosts`` that has one, else None."""
    for host in hosts:
        if host in _REGISTRY:
            return _REGISTRY[host]
    return None


def guard_passes(guard: Guard, old: dict | None, now: float) -> bool:
    """``Guard`` evaluated like the real server does (see drtool.cluster.base.Guard)."""
    if guard.always:
        return True
    if old is None:
        return guard.if_absent
    if guard.fields and all(old.get(f) == json.loads(v) for f, v in guard.fields):
        return True
    stamp = old.get(guard.expired) if guard.expired else None
    return isinstance(stamp, dict) and stamp.get("$reql_type$") == "TIME" and \
        float(stamp["epoch_time"]) < now


def _trunc(text: str) -> str:
    return text if len(text) <= _TRUNC_LEN else text[: _TRUNC_LEN - 3] + "..."


def _pretty_plain(value) -> str:
    return canonical.pretty(canonical.parse(canonical.json.dumps(value)))


def key_error_message(err: InvalidKey, key_value) -> str:
    """The server's message for a refused primary key (``key_value`` in parsed form)."""
    if err.kind == "type":
        return (
            "Primary keys must be either a number, string, bool, pseudotype or array "
            f"(got type {err.type_name}):\n{_trunc(canonical.pretty(key_value))}"
        )
    if err.kind == "too_long":
        return f"Primary key too long (max 127 characters): {canonical.pretty(key_value)}"
    if err.kind == "array_item":
        return (
            "Array keys can only contain numbers, strings, bools,  pseudotypes, or arrays "
            f"(got {_pretty_plain(err.value)} of type {err.type_name})."
        )
    if err.kind == "geometry":
        return ("Cannot use a geometry value as a key value in a primary or non-geospatial "
                "secondary index.")
    offset = err.value.encode("utf-8").index(b"\x00")
    return f"String {canonical.dumps(err.value[:20])} (truncated) contains NULL byte at offset {offset} in index key."


class FakeServer:
    """One in-memory cluster. See the module docstring for the test hooks."""

    def __init__(self, users: dict[str, str] | None = None, *, servers: int = 1) -> None:
        self.users = dict(users if users is not None else {"admin": ""})
        #: (user, db or None, table or None) -> overrides, like rethinkdb.permissions
        self.permissions: dict[tuple, dict] = {k: dict(v) for k, v in ADMIN_ROWS.items()}
        self.servers = servers  # replicas per shard cannot exceed this, like a real cluster
        self.dbs: dict[str, dict[str, Table]] = {}
        #: overrides every feed's queue_size when set (tests); None: the feed's own
        self.changefeed_queue_size: int | None = None
        #: the server's clock (epoch seconds); tests may replace it with their own function
        self.clock = time.time
        self._down = False
        self._scan_fail_after: int | None = None
        self._scan_hook = None
        self._fail: dict[str, list] = {}

    def now(self) -> float:
        """The server's r.now(): millisecond precision, like a RethinkDB TIME."""
        return round(self.clock(), 3)

    # --- connections ------------------------------------------------------------------
    def connect(self, config: ClusterConfig) -> "FakeCluster":
        if self._down:
            raise ClusterUnreachable(
                unreachable_message(config.role, config.hosts, "fake server is down")
            )
        host = next((h for h in config.hosts if _REGISTRY.get(h) is self), config.hosts[0])
        if config.user not in self.users or self.users[config.user] != config.password:
            raise AuthError(auth_message(config.role, host, config.user))
        return FakeCluster(self, f"{config.role} {host}", config.hosts, config.user)

    @property
    def down(self) -> bool:
        return self._down

    @down.setter
    def down(self, value: bool) -> None:
        self._down = bool(value)
        if value:
            self.drop_feeds(error=ClusterUnreachable("fake cluster: connection lost"))

    # --- test hooks -------------------------------------------------------------------
    def fail_scan_after(self, n_rows: int) -> None:
        self._scan_fail_after = n_rows

    def fail_next(self, method: str, error: DrtoolError | None = None, times: int = 1) -> None:
        self._fail.setdefault(method, []).extend([error] * times)

    def on_scan_row(self, callback) -> None:
        self._scan_hook = callback

    def table_obj(self, table: TableName) -> Table:
        tbl = self.dbs.get(table.db, {}).get(table.table)
        if tbl is None:
            raise NotFound(f"Table `{table}` does not exist.")
        return tbl

    def put_texts(self, table: TableName, texts: Iterable[str]) -> WriteResult:
        return self._insert(self.table_obj(table), list(texts), "replace", True)

    def delete(self, table: TableName, keys: Iterable[KeyText]) -> int:
        tbl = self.table_obj(table)
        return sum(tbl.delete(self._order(k)) for k in keys)

    def texts(self, table: TableName) -> list[str]:
        tbl = self.table_obj(table)
        return [tbl.docs[k][1] for k in tbl.order()]

    def force_feed_overflow(self, table: TableName, skipped: int = 44) -> None:
        for feed in self.table_obj(table).feeds:
            feed.skip(skipped)

    def drop_feeds(self, table: TableName | None = None, error: Exception | None = None) -> None:
        tables = [self.table_obj(table)] if table else [t for d in self.dbs.values() for t in d.values()]
        for tbl in tables:
            tbl.fail_feeds(error or ClusterUnreachable(f"changefeed on {tbl.name} was dropped"))

    @staticmethod
    def index_blob(text: str = "function(var1) { return var1(\"id\"); }") -> bytes:
        return INDEX_PREFIX + text.encode()

    @staticmethod
    def hook_blob(text: str = "function(var1, var2, var3) { return var3; }") -> bytes:
        return HOOK_PREFIX + text.encode()

    # --- internals shared with FakeCluster ----------------------------------------------
    @staticmethod
    def _order(key: KeyText) -> bytes:
        try:
            return key_order(key)
        except (InvalidKey, ValueError) as exc:
            raise ClusterError(f"invalid primary key {key!r}: {exc}") from None

    def _insert(self, tbl: Table, docs: Sequence[str], conflict: str, ignore_hook: bool) -> WriteResult:
        res = WriteResult()
        pk = tbl.primary_key

        def error(msg: str) -> None:
            res.errors += 1
            if res.first_error is None:
                res.first_error = msg

        for text in docs:
            try:
                value = canonical.parse(text)
            except canonical.CanonicalError as exc:
                raise ClusterError(f"{tbl.name}: the server refused the batch: {exc}") from None
            if not isinstance(value, dict) or "$reql_type$" in value:
                kind = "ARRAY" if isinstance(value, list) else "OBJECT" if isinstance(value, dict) else (
                    "NUMBER" if canonical.is_number(value) else "STRING" if isinstance(value, str)
                    else "NULL" if value is None else "BOOL")
                error(f"Expected type OBJECT but found {kind}.")
                continue
            if pk not in value:
                value[pk] = str(uuid.uuid4())  # the server generates a key
            key_value = value[pk]
            key_text = canonical.dumps(key_value)
            try:
                order = key_bytes(parse_key(key_text))
            except InvalidKey as exc:
                error(key_error_message(exc, key_value))
                continue
            doc = canonical.dumps(value)
            existing = tbl.docs.get(order)
            if existing is not None:
                if conflict == "error":
                    old = canonical.pretty(canonical.parse(existing[1]))
                    error(f"Duplicate primary key `{pk}`:\n{old}\n{canonical.pretty(value)}")
                    continue
                if conflict == "skip" or existing[1] == doc:
                    res.unchanged += 1
                    continue
            refused = None if ignore_hook else hook_refusal(tbl.write_hook)
            if refused:
                error(refused)
                continue
            if existing is not None:
                res.replaced += 1
            else:
                res.inserted += 1
            if tbl.write_hook is not None and not ignore_hook:
                tbl.hooked_writes += 1
            tbl.put(order, existing[0] if existing else key_text, doc)
        return res


class FakeCluster(FakeUsersMixin, FakeSchemaMixin, Cluster):
    """A connection to a FakeServer, implementing drtool.cluster.base.Cluster (schema
    operations live in ``drtool.cluster.fake_schema``)."""

    def __init__(self, server: FakeServer, description: str, hosts: Sequence[str],
                 user: str = "admin") -> None:
        self.server, self.user = server, user
        self.description = description
        self._hosts = ", ".join(hosts)
        self._closed = False
        self._feeds: list[FeedQueue] = []

    def _check(self, method: str) -> None:
        if self._closed:
            raise ClusterUnreachable(f"{self.description}: connection is closed")
        if self.server.down:
            raise ClusterUnreachable(f"{self.description}: lost connection to {self._hosts}")
        pending = self.server._fail.get(method)
        if pending:
            err = pending.pop(0)
            raise err or ClusterUnreachable(f"{self.description}: lost connection (injected, {method})")

    def _table(self, table: TableName) -> Table:
        if table.db not in self.server.dbs:
            raise NotFound(f"{self.description}: database `{table.db}` does not exist")
        tbl = self.server.dbs[table.db].get(table.table)
        if tbl is None:
            raise NotFound(f"{self.description}: table `{table}` does not exist")
        return tbl

    def _bounds(self, after: KeyText | None, upto: KeyText | None) -> tuple[bytes | None, bytes | None]:
        return (None if after is None else self.server._order(after),
                None if upto is None else self.server._order(upto))

    # --- catalogue --------------------------------------------------------------------
    async def list_tables(self) -> list[TableName]:
        self._check("list_tables")
        return sorted(t.name for d in self.server.dbs.values() for t in d.values())

    async def table_meta(self, table: TableName) -> TableMeta:
        self._check("table_meta")
        t = self._table(table)
        return TableMeta(
            name=table, primary_key=t.primary_key, shards=t.shards, replicas=t.replicas,
            write_acks=t.write_acks, durability=t.durability,
            indexes=tuple(IndexDef(n, b) for n, b in sorted(t.indexes.items())),
            write_hook=t.write_hook,
        )

    async def doc_count_estimate(self, table: TableName) -> int:
        self._check("doc_count_estimate")
        return len(self._table(table).docs)

    # --- reading ----------------------------------------------------------------------
    async def _rows(self, method: str, table: TableName, after, upto, batch_size: int):
        self._check(method)
        tbl = self._table(table)
        last, hi = self._bounds(after, upto)
        budget, self.server._scan_fail_after = self.server._scan_fail_after, None
        while True:
            self._check("_scan_batch")
            size = batch_size if budget is None else min(batch_size, budget)
            batch = tbl.range(last, hi, size) if size > 0 else []
            if not batch:
                if budget is not None and budget <= 0 and tbl.range(last, hi, 1):
                    raise ClusterUnreachable(f"{self.description}: lost connection during scan (injected)")
                return
            yield batch
            last = batch[-1][0]
            if budget is not None:
                budget -= len(batch)
            hook = self.server._scan_hook
            if hook is not None:
                for _, key, _doc in batch:
                    out = hook(table, key)
                    if inspect.isawaitable(out):
                        await out

    async def key_bounds(self, table: TableName) -> tuple[KeyText, KeyText] | None:
        self._check("key_bounds")
        tbl = self._table(table)
        order = tbl.order()
        return (tbl.docs[order[0]][0], tbl.docs[order[-1]][0]) if order else None

    async def scan(self, table: TableName, *, after: KeyText | None = None,
                   upto: KeyText | None = None, batch_size: int = 1000) -> AsyncIterator[list[Row]]:
        async for batch in self._rows("scan", table, after, upto, batch_size):
            yield [(key, doc) for _, key, doc in batch]

    async def hash_scan(self, table: TableName, *, after: KeyText | None = None,
                        upto: KeyText | None = None, batch_size: int = 5000):
        async for batch in self._rows("hash_scan", table, after, upto, batch_size):
            yield [(key, r_uuid(doc)) for _, key, doc in batch]

    async def range_digest(self, table: TableName, *, after: KeyText | None = None,
                           upto: KeyText | None = None) -> str:
        self._check("range_digest")
        tbl = self._table(table)
        lo, hi = self._bounds(after, upto)
        return fold(doc for _, _, doc in tbl.range(lo, hi, len(tbl.docs)))

    async def segment_digests(self, table: TableName,
                              ranges: Sequence[KeyRange]) -> list[tuple[int, str]]:
        self._check("segment_digests")
        tbl = self._table(table)
        out = []
        for after, upto in ranges:
            lo, hi = self._bounds(after, upto)
            hashes = [r_uuid(doc) for _, _, doc in tbl.range(lo, hi, len(tbl.docs))]
            out.append((len(hashes), digest_of_hashes(hashes)))
        return out

    async def chunk_digests(self, table: TableName, ranges: Sequence[KeyRange], *,
                            threshold: str, windows: Sequence[Window] | None = None,
                            keys: bool = True, digest_chars: int = 36) -> list[list[ChunkDigest]]:
        self._check("chunk_digests")
        tbl = self._table(table)
        out = []
        for n, (after, upto) in enumerate(ranges):
            lo, hi = self._bounds(after, upto if windows is None else None)
            skip, limit = (0, len(tbl.docs)) if windows is None else windows[n]
            rows = [(key, doc) for _, key, doc in tbl.range(lo, hi, skip + limit)[skip:]]
            out.append(fold_chunks(rows, upto, threshold, keys, digest_chars))
        return out

    async def get_docs(self, table: TableName, keys: Sequence[KeyText]) -> list[Row]:
        self._check("get_docs")
        tbl = self._table(table)
        found = {}
        for key in keys:
            order = self.server._order(key)
            if order in tbl.docs:
                found[order] = tbl.docs[order]
        return [found[o] for o in sorted(found)]

    # --- writing ----------------------------------------------------------------------
    async def insert_texts(self, table: TableName, docs: Sequence[str], *,
                           conflict: ConflictMode = "error", ignore_write_hook: bool = False) -> WriteResult:
        self._check("insert_texts")
        if conflict not in ("error", "replace", "skip"):
            raise ClusterError(f"{self.description}: unknown conflict mode {conflict!r}")
        self._may_write(table, ignore_write_hook)
        return self.server._insert(self._table(table), docs, conflict, ignore_write_hook)

    async def delete_keys(self, table: TableName, keys: Sequence[KeyText], *,
                          ignore_write_hook: bool = False) -> WriteResult:
        self._check("delete_keys")
        tbl = self._table(table)
        self._may_write(table, ignore_write_hook)
        orders = [self.server._order(k) for k in keys]
        res = WriteResult()
        refused = None if ignore_write_hook else hook_refusal(tbl.write_hook)
        for order in orders:
            if order in tbl.docs and refused:
                res.errors += 1
                res.first_error = res.first_error or refused
            elif order in tbl.docs:
                if tbl.write_hook is not None and not ignore_write_hook:
                    tbl.hooked_writes += 1
                res.deleted += tbl.delete(order)
        return res

    async def sync(self, table: TableName) -> None:
        self._check("sync")
        self._table(table)

    # --- drtool's own state -------------------------------------------------------------
    async def server_time(self) -> float:
        self._check("server_time")
        return self.server.now()

    async def write_state(self, table: TableName, key: KeyText, doc: str | None, guard: Guard, *,
                          now_fields: Mapping[str, float] | None = None) -> StateWrite:
        self._check("write_state")
        tbl, now = self._table(table), self.server.now()
        order = self.server._order(key)
        old = tbl.docs.get(order)
        if not guard_passes(guard, None if old is None else json.loads(old[1]), now):
            return StateWrite(False, None if old is None else old[1], now)
        if doc is None:
            tbl.delete(order)
            return StateWrite(True, None, now)
        value = json.loads(doc)
        for field, offset in (now_fields or {}).items():
            value[field] = {"$reql_type$": "TIME", "epoch_time": round(now + offset, 3),
                            "timezone": "+00:00"}
        result = self.server._insert(tbl, [json.dumps(value)], "replace", True)
        if result.errors:
            raise ClusterError(f"{self.description} table {table}: the server refused the "
                               f"write: {result.first_error}")
        stored = tbl.docs[order][1]
        return StateWrite(True, stored, now)

    # --- changefeeds ------------------------------------------------------------------
    async def changes(self, table: TableName, *,
                      queue_size: int = DEFAULT_FEED_QUEUE) -> AsyncIterator[FeedEvent]:
        self._check("changes")
        tbl = self._table(table)
        limit = self.server.changefeed_queue_size or queue_size
        feed = FeedQueue(limit, self)
        tbl.feeds.append(feed)
        self._feeds.append(feed)
        try:
            yield FeedReady()
            while True:
                yield await feed.get()
        finally:
            if feed in tbl.feeds:
                tbl.feeds.remove(feed)
            if feed in self._feeds:
                self._feeds.remove(feed)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            for feed in list(self._feeds):
                feed.fail(ClusterUnreachable(f"{self.description}: connection is closed"))

