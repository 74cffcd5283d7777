"""In-memory fake RethinkDB cluster for tests and benches, behaving like the real server.

Register a server under a host name of a ``FakeNetwork`` and pass the network as the connector
wherever drtool connects::

    server = FakeServer(users={"admin": "", "app": "pw"})
    NETWORK.register("primary:28015", server)
    cluster = await connect(ClusterConfig("primary", ("primary:28015",)), NETWORK)

Behaviour follows shared/reql-facts.md and shared/reql-golden.json: documents are stored as
the server's canonical text (``drtool.reql.canonical``) in the server's primary-key order
(``drtool.reql.ordering``); per-document write failures come back in the WriteResult with the
server's exact ``first_error`` texts; changefeeds yield FeedReady, then every change, and
FeedOverflow with the server's message when the consumer falls behind. What the fake cannot
do: evaluate index functions or write hooks (blobs are stored opaque; a hooked write is
counted in ``hooked_writes`` and stored unchanged, except that the rejecting hook of
``set_rejecting_write_hook`` refuses it), read permissions on user tables;
``doc_count_estimate`` is exact. Write and config permissions are enforced
(drtool.cluster.fake.users).

This module holds the registry, the server and its test hooks, and the connection
(``FakeCluster``); each part of the Cluster interface lives in a mixin of its own:
``fake_reads`` (scans, digests), ``fake_writes`` (inserts, deletes, state writes),
``fake_feeds`` (changefeeds), ``fake_schema`` (databases, tables, indexes, write hooks),
``fake_users`` (users, permissions, fences); the tables themselves in ``fake_store``.

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

import time
from collections.abc import Iterable, Sequence

from drtool.cluster.base import Cluster
from drtool.cluster.fake.feeds import FakeFeedsMixin, FeedQueue
from drtool.cluster.fake.reads import FakeReadsMixin
from drtool.cluster.fake.schema import HOOK_PREFIX, INDEX_PREFIX, FakeSchemaMixin
from drtool.cluster.fake.store import Table
from drtool.cluster.fake.users import ADMIN_ROWS, FakeUsersMixin
from drtool.cluster.fake.writes import FakeWritesMixin, insert_docs
from drtool.cluster.rethink.util import auth_message, unreachable_message  # same wording
from drtool.errors import AuthError, ClusterError, ClusterUnreachable, DrtoolError, NotFound
from drtool.model import ClusterConfig, IndexDef, KeyText, TableMeta, TableName, WriteResult
from drtool.reql.ordering import InvalidKey, key_order

class FakeNetwork:
    """Host names served by fake servers: the ``Connector`` (drtool.cluster) that tests and
    benches pass wherever drtool connects. Awaiting it with a ClusterConfig connects to the
    first of its hosts that is served (ClusterUnreachable naming them when none is)."""

    def __init__(self) -> None:
        self.servers: dict[str, FakeServer] = {}

    def register(self, host: str, server: "FakeServer") -> None:
        """Serve ``host`` (as written in ClusterConfig.hosts, e.g. "a:28015") from ``server``."""
        self.servers[host] = server

    def unregister(self, host: str) -> None:
        self.servers.pop(host, None)

    def lookup(self, hosts: Iterable[str]) -> "FakeServer | None":
        """The server of the first of ``hosts`` that is served, else None."""
        return next((self.servers[h] for h in hosts if h in self.servers), None)

    async def __call__(self, config: ClusterConfig) -> "FakeCluster":
        host = next((h for h in config.hosts if h in self.servers), None)
        if host is None:
            raise ClusterUnreachable(unreachable_message(
                config.role, config.hosts, "no fake server serves these hosts"))
        return self.servers[host].connect(config, host)


#: the network of the test suite and the benches (``register`` below serves a host there);
#: passed explicitly as the connector by every caller that wants the fake
NETWORK = FakeNetwork()
register, unregister, lookup = NETWORK.register, NETWORK.unregister, NETWORK.lookup


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
    def connect(self, config: ClusterConfig, host: str | None = None) -> "FakeCluster":
        """A connection as ``config.user``, through ``host`` (named in messages; default the
        first of ``config.hosts``)."""
        if self._down:
            raise ClusterUnreachable(
                unreachable_message(config.role, config.hosts, "fake server is down")
            )
        host = host or config.hosts[0]
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
        return insert_docs(self.table_obj(table), list(texts), "replace", True)

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


class FakeCluster(FakeReadsMixin, FakeWritesMixin, FakeFeedsMixin, FakeSchemaMixin,
                  FakeUsersMixin, Cluster):
    """A connection to a FakeServer, implementing drtool.cluster.base.Cluster: the catalogue
    and the connection here; reads in ``fake_reads``, writes and state writes in
    ``fake_writes``, changefeeds in ``fake_feeds``, schema operations in ``fake_schema``,
    users, permissions and the write-hook fence in ``fake_users``."""

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

    # --- lifecycle ------------------------------------------------------------------
    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            for feed in list(self._feeds):
                feed.fail(ClusterUnreachable(f"{self.description}: connection is closed"))

