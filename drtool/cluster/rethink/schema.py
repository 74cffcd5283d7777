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

from drtool.cluster.base import STATE_READY_TIMEOUT, STATE_REPLICAS
from drtool.errors import ClusterError, ClusterUnreachable, NotFound
from drtool.model import IndexDef, TableName

WAIT_TIMED_OUT = "Timed out while waiting for tables"  # the server's error for table.wait


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
        want = await self._state_replicas()
        created = False
        try:
            await self._session.fetch(r.db(table.db).table_create(
                table.table, primary_key=primary_key, shards=1, replicas=want), table)
            created = True
        except ClusterError as err:
            if "already exists" not in str(err) and "ambiguous" not in str(err):
                raise
        await self._dedupe(system.table("table_config").filter(
            {"db": table.db, "name": table.table}))
        if not created:
            await self._follow_servers(table, want)
        # not all_replicas_ready (the default): never true while a server is down; the
        # timeout arrives as ClusterUnreachable ("Timed out while waiting for tables")
        try:
            await self._session.fetch(self._table(table).wait(
                wait_for="ready_for_writes", timeout=STATE_READY_TIMEOUT), table)
        except ClusterUnreachable as err:
            if WAIT_TIMED_OUT not in str(err):
                raise
            raise ClusterUnreachable(
                f"{self._session.description} table {table}: not ready for writes after "
                f"{STATE_READY_TIMEOUT:g} s ({WAIT_TIMED_OUT}): drtool's own tables take "
                "writes only while most of their replicas' servers are up; start the "
                f"{self._session.config.role}'s servers that are down, then try again") from None
        return created

    async def _state_replicas(self) -> int:
        """Replicas for drtool's own tables: every connected server, at most STATE_REPLICAS
        (1 when the user may not read ``rethinkdb.server_status``)."""
        try:
            servers = await self._session.fetch(
                self._r.db("rethinkdb").table("server_status").count())
        except ClusterError:
            return 1
        return max(1, min(STATE_REPLICAS, int(servers)))

    async def _follow_servers(self, table: TableName, want: int) -> None:
        """Give an existing state table ``want`` replicas when it has fewer (servers were
        added since it was created). Best effort: a cluster with a server down refuses
        (the next ensure tries again); the table stays usable as it is."""
        t = self._table(table)
        try:
            have = await self._session.fetch(
                t.config()["shards"].map(lambda s: s["replicas"].count()).min(), table)
            if int(have) < want:
                await self._session.fetch(t.reconfigure(shards=1, replicas=want), table)
        except (ClusterError, ClusterUnreachable):
            pass

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
