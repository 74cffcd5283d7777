"""Cluster contract, schema: databases, tables and their settings, indexes, write hooks.

Part of the contract suite (``tests.cluster_contract``), run against the fake and a real
server: what exists is an error to create again, what is missing is NotFound to use and no
error to drop; index and write-hook blobs round-trip opaque; ``ensure_table`` leaves exactly
one table when creations race.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from drtool.cluster.base import ALWAYS
from drtool.errors import ClusterError, NotFound
from drtool.model import IndexDef, TableName

from tests.cluster_contract_target import ContractTarget, collect


class SchemaContract:
    """Schema: every test takes the ``cluster`` fixture (a ContractTarget)."""

    async def test_schema_operations(self, cluster: ContractTarget):
        c = cluster.cluster
        assert await c.ensure_db(cluster.db) is False
        t = TableName(cluster.db, "shape")
        await c.create_table(t, primary_key="pk", shards=1, replicas=1)
        with pytest.raises(ClusterError):
            await c.create_table(t, primary_key="pk", shards=1, replicas=1)
        meta = await c.table_meta(t)
        assert (meta.name, meta.primary_key, meta.shards, meta.replicas) == (t, "pk", 1, 1)
        assert (meta.indexes, meta.write_hook) == ((), None)
        res = await c.insert_texts(t, ['{"pk":"k","id":1}'])
        assert res.inserted == 1
        assert await collect(c.scan(t)) == [('"k"', '{"id":1,"pk":"k"}')]
        tables = await c.list_tables()
        assert t in tables and tables == sorted(tables)
        assert all(name.db != "rethinkdb" for name in tables)
        await c.drop_table(t)
        assert t not in await c.list_tables()
        await c.drop_table(t)  # missing: not an error

    async def test_table_settings_round_trip(self, cluster: ContractTarget):
        c = cluster.cluster
        t = TableName(cluster.db, "settings")
        await c.create_table(t, primary_key="id", shards=1, replicas=1, durability="soft",
                             write_acks="single")
        meta = await c.table_meta(t)
        assert (meta.durability, meta.write_acks) == ("soft", "single")
        await c.drop_table(t)

    async def test_missing_things(self, cluster: ContractTarget):
        c = cluster.cluster
        missing = TableName(cluster.db, "no_such_table")
        with pytest.raises(NotFound):
            await c.table_meta(missing)
        with pytest.raises(NotFound):
            await collect(c.scan(missing))
        with pytest.raises(NotFound):
            await c.insert_texts(missing, ['{"id":1}'])
        with pytest.raises(NotFound):
            await c.create_table(TableName("drtool_missing_" + uuid.uuid4().hex[:8], "t"),
                                 primary_key="id", shards=1, replicas=1)
        other = "drtool_tmp_" + uuid.uuid4().hex[:8]
        try:
            assert await c.ensure_db(other) is True
            assert await c.ensure_db(other) is False
        finally:
            await c.drop_db(other)
        await c.drop_db(other)  # missing: not an error

    async def test_index_and_write_hook_blobs_round_trip(self, cluster: ContractTarget):
        c = cluster.cluster
        t = await cluster.new_table()
        blob = await cluster.make_index_blob("v")
        assert blob.startswith(b"$reql_index_function$")
        await c.create_index(t, IndexDef("by_v", blob))
        await c.wait_indexes(t)
        assert (await c.table_meta(t)).indexes == (IndexDef("by_v", blob),)
        await c.drop_index(t, "by_v")
        assert (await c.table_meta(t)).indexes == ()
        hook = await cluster.make_hook_blob()
        await c.set_write_hook(t, hook)
        assert (await c.table_meta(t)).write_hook == hook
        await c.set_write_hook(t, None)
        assert (await c.table_meta(t)).write_hook is None

    async def test_doc_count_estimate_of_empty_table(self, cluster: ContractTarget):
        t = await cluster.new_table()
        assert await cluster.cluster.doc_count_estimate(t) == 0

    async def test_ensure_table_when_creations_race(self, cluster: ContractTarget):
        # Racing table_create calls can make two tables of one name on a real 2.4.4 server
        # ("... is ambiguous; there are multiple tables with that name"): ensure_table
        # leaves exactly one, whoever wins.
        c = cluster.cluster
        t = TableName(cluster.db, "state_" + uuid.uuid4().hex[:6])
        created = await asyncio.gather(*[c.ensure_table(t) for _ in range(3)])
        assert True in created
        assert await c.ensure_table(t) is False
        assert [n for n in await c.list_tables() if n == t] == [t]
        written = await c.write_state(t, '"k"', '{"id":"k"}', ALWAYS)
        assert written.applied and await c.get_docs(t, ['"k"']) == [('"k"', '{"id":"k"}')]
        # one replica per server up to three: one on a one-server cluster (three servers:
        # integration/test_multi_server_e2e.py)
        meta = await c.table_meta(t)
        assert (meta.shards, meta.replicas) == (1, 1)
