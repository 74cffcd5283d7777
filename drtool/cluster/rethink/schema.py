"""Schema operations on a real server (a mixin of drtool.cluster.rethink.cluster.RethinkCluster).

Databases, tables, secondary indexes and write hooks. Observed on RethinkDB 2.4.4 (recorded
in the contract suite): racing ``table_create`` calls can leave two tables of one name (the
server then calls the name "ambiguous"), so ``ensure_table`` removes the extra config rows;
``db_create``/``table_create`` of an existing name is a ClusterError ("already exists"),
dropping something missing is NotFound (turned into "nothing to do" here); ``table_create``
has no ``write_acks`` option, it is set through ``config()``. Index functions and write hooks
travel as the server's opaque binary blobs. Errors are the session's (drtool errors only).
"""

from __future__ import annotations

from typing import Any

from drtool.errors import ClusterError, NotFound
from drtool.model import IndexDef, TableName


class RethinkSchemaMixin:
    """Implements the schema half of drtool.cluster.base.Cluster with ``self._r`` and
    ``self._session``; keeps RethinkCluster's caches (``_pks``, ``_no_bypass``) in step."""

    _r: Any
    _session: Any
    _pks: dict[TableName, str]
    _no_bypass: set[TableName]

    async def ensure_db(self, db: str) -> bool:
        if db in await self._session.fetch(self._r.db_list()):
            return False
        try:
            await self._session.fetch(self._r.db_create(db))
        except ClusterError as err:
            if "already exists" in str(err):  # created concurrently
                return False
            raise
        return True

    async def create_table(self, table: TableName, *, primary_key: str, shards: int,
                           replicas: int, durability: str = "hard",
                           write_acks: str = "majority") -> None:
        await self._session.fetch(self._r.db(table.db).table_create(
            table.table, primary_key=primary_key, shards=shards, replicas=replicas,
            durability=durability), table)
        self._pks[table] = primary_key
        if write_acks != "majority":  # table_create has no such option: set it in config()
            await self._session.fetch(
                self._table(table).config().update({"write_acks": write_acks}), table)

    async def ensure_table(self, table: TableName, *, primary_key: str = "id") -> bool:
        r = self._r
        system = r.db("rethinkdb")
        await self.ensure_db(table.db)
        await self._dedupe(system.table("db_config").filter({"name": table.db}))
        created = False
        try:
            await self._session.fetch(r.db(table.db).table_create(
                table.table, primary_key=primary_key, shards=1, replicas=1), table)
            created = True
        except ClusterError as err:
            if "already exists" not in str(err) and "ambiguous" not in str(err):
                raise
        await self._dedupe(system.table("table_config").filter(
            {"db": table.db, "name": table.table}))
        await self._session.fetch(self._table(table).wait(), table)
        return created

    async def _dedupe(self, rows: Any) -> None:
        """Keep the config row with the smallest id of those ``rows`` selects; delete the
        others (duplicates left by racing creations)."""
        ids = sorted(await self._session.fetch(rows["id"]))
        for extra in ids[1:]:
            system = self._r.db("rethinkdb")
            for name in ("table_config", "db_config"):
                await self._session.fetch(system.table(name).get(extra).delete())

    async def drop_table(self, table: TableName) -> None:
        self._pks.pop(table, None)
        self._no_bypass.discard(table)
        try:
            await self._session.fetch(self._r.db(table.db).table_drop(table.table), table)
        except NotFound:
            pass

    async def drop_db(self, db: str) -> None:
        for table in [t for t in self._pks if t.db == db]:
            self._pks.pop(table, None)
        self._no_bypass = {t for t in self._no_bypass if t.db != db}
        try:
            await self._session.fetch(self._r.db_drop(db))
        except NotFound:
            pass

    async def create_index(self, table: TableName, index: IndexDef) -> None:
        query = self._table(table).index_create(index.name, self._r.binary(index.blob))
        await self._session.fetch(query, table)

    async def drop_index(self, table: TableName, name: str) -> None:
        await self._session.fetch(self._table(table).index_drop(name), table)

    async def wait_indexes(self, table: TableName) -> None:
        await self._session.fetch(self._table(table).index_wait(), table, binary_format="raw")

    async def set_write_hook(self, table: TableName, blob: bytes | None) -> None:
        hook = None if blob is None else self._r.binary(blob)
        await self._session.fetch(self._table(table).set_write_hook(hook), table)
        self._no_bypass.discard(table)
