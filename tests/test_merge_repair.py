"""The runner's streaming hash-merge repair (drtool.standby.repair), on the fake and, with
DRTOOL_TEST_RETHINKDB, on a real server (two databases of one server stand for the clusters)."""

from __future__ import annotations

import uuid

import pytest

from drtool.model import TableName
from drtool.standby.repair import merge_repair

from tests.replication_helpers import fake_or_real_cluster


@pytest.fixture(params=["fake", "real"])
async def pair(request):
    source = await fake_or_real_cluster(request.param, "primary")
    target = await fake_or_real_cluster(request.param, "standby")
    dbs = ["drtool_merge_" + uuid.uuid4().hex[:8] for _ in range(2)]
    try:
        yield source, target, dbs
    finally:
        for c, db in ((source, dbs[0]), (target, dbs[1])):
            await c.drop_db(db)
        await source.close()
        await target.close()


async def test_merge_repair_fixes_exactly_what_differs(pair):
    source, target, (sdb, tdb) = pair
    # one table name in two databases: compare by renaming through a shared table name
    s_t, t_t = TableName(sdb, "t"), TableName(tdb, "t")
    for c, t in ((source, s_t), (target, t_t)):
        await c.ensure_db(t.db)
        await c.create_table(t, primary_key="id", shards=1, replicas=1)
    docs = ['{"id":%d,"v":"é-%d"}' % (i, i) for i in range(3000)]
    await source.insert_texts(s_t, docs)
    await target.insert_texts(t_t, docs[:2990] + ['{"id":5000,"v":"extra"}'])  # 10 missing
    await target.insert_texts(t_t, ['{"id":7,"v":"stale"}'], conflict="replace")  # changed
    await target.delete_keys(t_t, ["100"])  # missing in the middle

    class Renamed:  # the source's table seen under the target's name
        def __getattr__(self, name):
            method = getattr(source, name)
            return lambda table, *a, **k: method(s_t, *a, **k)

    got = await merge_repair(Renamed(), target, t_t, batch_size=4, scan_batch=500)
    assert (got.differing, got.read, got.written, got.deleted) == (13, 12, 12, 1)
    same = [d async for batch in target.scan(t_t) for _, d in batch]
    assert same == [d async for batch in source.scan(s_t) for _, d in batch]
    again = await merge_repair(Renamed(), target, t_t)
    assert (again.differing, again.written, again.deleted) == (0, 0, 0)
    assert again.bytes > 0
