"""The contract suite against the in-memory fake, plus the fake's own test hooks."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from drtool.cluster import connect, fake
from drtool.cluster.fake import FakeServer
from drtool.errors import AuthError, ClusterError, ClusterUnreachable
from drtool.model import ClusterConfig, FeedChange, FeedOverflow, FeedReady, TableName

from tests.cluster_contract import ClusterContract
from tests.cluster_contract_target import ContractTarget, collect, next_event


@pytest.fixture
async def cluster():
    server = FakeServer()
    host = f"fake-contract-{uuid.uuid4().hex[:8]}:28015"
    fake.register(host, server)
    c = await connect(ClusterConfig("primary", (host,)), fake.NETWORK)
    db = "drtool_test_" + uuid.uuid4().hex[:8]
    await c.ensure_db(db)

    async def index_blob(field: str) -> bytes:
        return FakeServer.index_blob(f'function(var1) {{ return var1("{field}"); }}')

    async def hook_blob() -> bytes:
        return FakeServer.hook_blob()

    async def connect_as(user: str, password: str):
        return await connect(ClusterConfig("primary", (host,), user=user, password=password),
                             fake.NETWORK)

    try:
        yield ContractTarget(c, db, index_blob, hook_blob, fake=server, connect_as=connect_as)
    finally:
        await c.drop_db(db)
        await c.close()
        fake.unregister(host)


class TestFakeContract(ClusterContract):
    pass


# --- the fake's own behaviour and test hooks -------------------------------------------
async def test_connect_checks_users_and_reports_down(cluster):
    server = cluster.fake
    host = f"fake-auth-{uuid.uuid4().hex[:6]}:28015"
    fake.register(host, server)
    try:
        server.users["app"] = "pw"
        ok = await connect(ClusterConfig("standby", ("nowhere:1", host), user="app", password="pw"),
                           fake.NETWORK)
        assert ok.description == f"standby {host}"
        with pytest.raises(AuthError, match=host):
            await connect(ClusterConfig("standby", (host,), user="app", password="bad"),
                          fake.NETWORK)
        with pytest.raises(AuthError):
            await connect(ClusterConfig("standby", (host,), user="nobody"), fake.NETWORK)
        server.down = True
        with pytest.raises(ClusterUnreachable, match=host):
            await connect(ClusterConfig("standby", (host,)), fake.NETWORK)
        with pytest.raises(ClusterUnreachable):
            await ok.list_tables()
        server.down = False
        assert await ok.list_tables() == []
    finally:
        fake.unregister(host)


async def test_fail_scan_after_then_resume(cluster):
    c, server = cluster.cluster, cluster.fake
    t = await cluster.new_table()
    await c.insert_texts(t, ['{"id":%d}' % i for i in range(10)])
    server.fail_scan_after(4)
    got = []
    with pytest.raises(ClusterUnreachable):
        async for batch in c.scan(t, batch_size=3):
            got.extend(k for k, _ in batch)
    assert got == ["0", "1", "2", "3"]
    rest = [k for k, _ in await collect(c.scan(t, after=got[-1]))]
    assert got + rest == [str(i) for i in range(10)]


async def test_on_scan_row_sees_writes_ahead_of_the_cursor(cluster):
    c, server = cluster.cluster, cluster.fake
    t = await cluster.new_table()
    await c.insert_texts(t, ['{"id":%d}' % i for i in (1, 2, 3)])
    seen = []

    async def write_once(table, key):
        seen.append(key)
        if key == "1":
            await c.insert_texts(table, ['{"id":2.5}', '{"id":0}'])

    server.on_scan_row(write_once)
    keys = [k for k, _ in await collect(c.scan(t, batch_size=1))]
    server.on_scan_row(None)
    assert keys == ["1", "2", "2.5", "3"]  # 0 landed behind the cursor
    assert seen == keys


async def test_fail_next_and_hooked_writes(cluster):
    c, server = cluster.cluster, cluster.fake
    t = await cluster.new_table()
    server.fail_next("insert_texts")
    with pytest.raises(ClusterUnreachable):
        await c.insert_texts(t, ['{"id":1}'])
    server.fail_next("insert_texts", ClusterError("refused"))
    with pytest.raises(ClusterError, match="refused"):
        await c.insert_texts(t, ['{"id":1}'])
    assert await collect(c.scan(t)) == []
    await c.set_write_hook(t, FakeServer.hook_blob())
    await c.insert_texts(t, ['{"id":1}'], ignore_write_hook=True)
    await c.insert_texts(t, ['{"id":2}'])
    await c.delete_keys(t, ["1"], ignore_write_hook=True)
    assert server.table_obj(t).hooked_writes == 1
    assert await c.doc_count_estimate(t) == 1


async def test_forced_overflow_and_dropped_feed(cluster):
    c, server = cluster.cluster, cluster.fake
    t = await cluster.new_table()
    feed = c.changes(t)
    assert await next_event(feed) == FeedReady()
    server.put_texts(t, ['{"id":"a"}'])
    server.force_feed_overflow(t, 44)
    assert await next_event(feed) == FeedChange('"a"', '{"id":"a"}')
    assert await next_event(feed) == FeedOverflow(
        "Changefeed cache over array size limit, skipped 44 elements.", 44)
    server.drop_feeds(t)
    with pytest.raises(ClusterUnreachable):
        await next_event(feed)


async def test_feed_waits_for_changes_and_closing_cluster_ends_it(cluster):
    server = cluster.fake
    t = await cluster.new_table()
    c = server.connect(ClusterConfig("primary", ("own-connection:1",)))
    feed = c.changes(t)
    assert await next_event(feed) == FeedReady()
    pending = asyncio.ensure_future(next_event(feed))
    await asyncio.sleep(0.01)
    assert not pending.done()
    server.delete(t, ['"nothing"'])
    server.put_texts(t, ['{"id":"b"}'])
    assert await pending == FeedChange('"b"', '{"id":"b"}')
    await c.close()
    with pytest.raises(ClusterUnreachable):
        await next_event(feed)


async def test_invalid_json_fails_the_batch(cluster):
    t = await cluster.new_table()
    with pytest.raises(ClusterError):
        await cluster.cluster.insert_texts(t, ['{"id":1', '{"id":2}'])
    res = await cluster.cluster.insert_texts(t, ['[1]', '{"id":[null]}', '{"id":2}'])
    assert (res.inserted, res.errors) == (1, 2)
    assert res.first_error == "Expected type OBJECT but found ARRAY."


async def test_replicas_limited_by_servers(cluster):
    with pytest.raises(ClusterError):
        await cluster.cluster.create_table(TableName(cluster.db, "r3"), primary_key="id", shards=2, replicas=3)
    server = FakeServer(servers=3)
    c = server.connect(ClusterConfig("primary", ("x:1",)))
    await c.ensure_db("d")
    await c.create_table(TableName("d", "t"), primary_key="id", shards=2, replicas=3)
    meta = await c.table_meta(TableName("d", "t"))
    assert (meta.shards, meta.replicas) == (2, 3)


async def test_the_fake_is_reached_only_through_the_connector_its_caller_passes():
    """A host served by a fake network is not looked up by a connect without it: the real
    adapter is asked (and finds nothing there); another network does not serve it either."""
    host = f"fake-only-{uuid.uuid4().hex[:8]}:1"
    fake.register(host, FakeServer())
    try:
        with pytest.raises(ClusterUnreachable, match=host):
            await connect(ClusterConfig("primary", (host,), connect_timeout=2))
        with pytest.raises(ClusterUnreachable, match="no fake server serves these hosts"):
            await connect(ClusterConfig("primary", (host,)), fake.FakeNetwork())
        async with await connect(ClusterConfig("primary", (host,)), fake.NETWORK) as cluster:
            assert await cluster.list_tables() == []
    finally:
        fake.unregister(host)
