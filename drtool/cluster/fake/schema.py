"""Schema operations of the fake cluster (a mixin of ``drtool.cluster.fake.FakeCluster``).

Follows the real server: a database must exist before ``create_table`` (NotFound otherwise),
an existing table is a ClusterError, dropping something missing is not an error, names must
match ``[A-Za-z0-9_-]+``, replicas cannot exceed the fake's ``servers`` count (like a real
cluster), index and write-hook blobs must look like the server's (``$reql_index_function$`` /
``$reql_write_hook_function$`` prefixes) and are stored opaque.
"""

from __future__ import annotations

import re

from drtool.cluster.fake.store import Table
from drtool.errors import ClusterError, NotFound
from drtool.model import IndexDef, TableName

INDEX_PREFIX = b"$reql_index_function$"
HOOK_PREFIX = b"$reql_write_hook_function$"
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
SYSTEM_DB = "rethinkdb"


class FakeSchemaMixin:
    """Implements the schema half of drtool.cluster.base.Cluster on ``self.server``. Needs:
    the host (FakeCluster) provides ``server``, ``description``, ``_check(method)`` and
    ``_table(name)``."""

    def _name_ok(self, kind: str, name: str) -> None:
        if not _NAME.match(name):
            raise ClusterError(
                f"{self.description}: {kind} name `{name}` invalid "
                "(Use A-Z, a-z, 0-9, _ and - only)."
            )

    async def ensure_db(self, db: str) -> bool:
        self._check("ensure_db")
        self._name_ok("Database", db)
        if db == SYSTEM_DB or db in self.server.dbs:
            return False
        self.server.dbs[db] = {}
        return True

    async def create_table(self, table: TableName, *, primary_key: str, shards: int,
                           replicas: int, durability: str = "hard",
                           write_acks: str = "majority") -> None:
        self._check("create_table")
        self._name_ok("Table", table.table)
        if table.db == SYSTEM_DB:
            raise ClusterError(f"{self.description}: database `rethinkdb` is special; "
                               "you can't create new tables in it.")
        if table.db not in self.server.dbs:
            raise NotFound(f"{self.description}: database `{table.db}` does not exist")
        if table.table in self.server.dbs[table.db]:
            raise ClusterError(f"{self.description}: table `{table}` already exists")
        if not 1 <= shards <= 64:
            raise ClusterError(f"{self.description}: shards must be between 1 and 64, got {shards}")
        if not 1 <= replicas <= self.server.servers:
            raise ClusterError(
                f"{self.description}: can't put {replicas} replicas on servers with the tag "
                f"`default` because there are only {self.server.servers} servers with that tag"
            )
        if durability not in ("hard", "soft"):
            raise ClusterError(f"{self.description}: durability must be hard or soft")
        if write_acks not in ("majority", "single"):
            raise ClusterError(f"{self.description}: write_acks must be majority or single")
        self.server.dbs[table.db][table.table] = Table(
            table, primary_key=primary_key, shards=shards, replicas=replicas,
            durability=durability, write_acks=write_acks,
        )

    async def ensure_table(self, table: TableName, *, primary_key: str = "id") -> bool:
        self._check("ensure_table")
        await self.ensure_db(table.db)
        if table.table in self.server.dbs[table.db]:
            return False
        await self.create_table(table, primary_key=primary_key, shards=1, replicas=1)
        return True

    async def drop_table(self, table: TableName) -> None:
        self._check("drop_table")
        tbl = self.server.dbs.get(table.db, {}).pop(table.table, None)
        if tbl is not None:
            tbl.fail_feeds(ClusterError(f"{self.description}: table `{table}` was dropped"))

    async def drop_db(self, db: str) -> None:
        self._check("drop_db")
        tables = self.server.dbs.pop(db, {})
        for tbl in tables.values():
            tbl.fail_feeds(ClusterError(f"{self.description}: database `{db}` was dropped"))

    async def create_index(self, table: TableName, index: IndexDef) -> None:
        self._check("create_index")
        tbl = self._table(table)
        self._name_ok("Index", index.name)
        if index.name in tbl.indexes:
            raise ClusterError(f"{self.description}: index `{index.name}` already exists on table `{table}`")
        if not index.blob.startswith(INDEX_PREFIX):
            raise ClusterError(f"{self.description}: index `{index.name}`: not an index function blob")
        tbl.indexes[index.name] = bytes(index.blob)

    async def drop_index(self, table: TableName, name: str) -> None:
        self._check("drop_index")
        tbl = self._table(table)
        if tbl.indexes.pop(name, None) is None:
            raise ClusterError(f"{self.description}: index `{name}` does not exist on table `{table}`")

    async def wait_indexes(self, table: TableName) -> None:
        self._check("wait_indexes")
        self._table(table)

    async def set_write_hook(self, table: TableName, blob: bytes | None) -> None:
        self._check("set_write_hook")
        tbl = self._table(table)
        if blob is not None and not blob.startswith(HOOK_PREFIX):
            raise ClusterError(f"{self.description}: not a write hook function blob")
        tbl.write_hook = None if blob is None else bytes(blob)
