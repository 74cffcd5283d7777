"""The Cluster contract: one suite run unchanged against the fake and a real RethinkDB.

Use it by subclassing ``ClusterContract`` in a test module and defining a ``cluster`` fixture
that yields a ``ContractTarget``: a connected Cluster, a fresh uniquely named database the
fixture created (and drops afterwards), and two blob makers. Only the Cluster interface is
used here; blobs for indexes and write hooks come from the fixture because only a real
server can compile a ReQL function (the real fixture makes them with the driver on a scratch
table, the fake one with ``FakeServer.index_blob``/``hook_blob``). Expected values come from
shared/reql-golden.json, recorded on RethinkDB 2.4.4.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from drtool.cluster.base import ALWAYS, Cluster, Guard
from drtool.core.shape import is_drtool_fence
from drtool.digest import fold, r_uuid
from drtool.errors import ClusterError, NotFound, PermissionDenied
from drtool.model import FeedChange, FeedOverflow, FeedReady, IndexDef, PermissionRow, TableName, UserInfo

from tests.golden import GOLDEN  # noqa: E402
FEED_TIMEOUT = 10.0


@dataclass
class ContractTarget:
    cluster: Cluster
    db: str
    make_index_blob: Callable[[str], Awaitable[bytes]]  # blob of an index on that field
    make_hook_blob: Callable[[], Awaitable[bytes]]  # blob of an identity write hook
    fake: object | None = None  # the FakeServer, for fake-only tests
    #: connect to the same cluster as another user: ``await connect_as(user, password)``
    connect_as: Callable[[str, str], Awaitable[Cluster]] | None = None

    async def new_table(self, primary_key: str = "id") -> TableName:
        name = TableName(self.db, "t_" + uuid.uuid4().hex[:10])
        await self.cluster.create_table(name, primary_key=primary_key, shards=1, replicas=1)
        return name


async def collect(aiter) -> list:
    return [row for batch in [b async for b in aiter] for row in batch]


def expected_chunks(rows: list, threshold: str, upto) -> list:
    """chunk_digests of ``rows`` by the contract, computed independently: a chunk ends after
    each key whose r.uuid is below the threshold; the next one folds from that key's hash."""
    chunks, seed, texts = [], "", []
    for key, text in rows:
        texts.append(text)
        if r_uuid(key) < threshold:
            chunks.append((key, len(texts), fold(texts, seed)))
            seed, texts = r_uuid(key), []
    return chunks + [(upto, len(texts), fold(texts, seed))]


async def next_event(feed):
    return await asyncio.wait_for(feed.__anext__(), FEED_TIMEOUT)


class ClusterContract:
    """Every test takes the ``cluster`` fixture (a ContractTarget)."""

    # --- golden data ------------------------------------------------------------------
    async def test_golden_documents_round_trip(self, cluster: ContractTarget):
        t = await cluster.new_table()
        inputs = [d["input"] for d in GOLDEN["documents"]]
        res = await cluster.cluster.insert_texts(t, inputs)
        assert (res.inserted, res.errors, res.first_error) == (len(inputs), 0, None)
        rows = await collect(cluster.cluster.scan(t))
        assert [doc for _, doc in rows] == GOLDEN["table_in_key_order"]
        assert [k for k, _ in rows] == [json.dumps(json.loads(d)["id"]) for d in GOLDEN["table_in_key_order"]]
        golden_uuid = {json.loads(d["canonical"])["id"]: d["uuid"] for d in GOLDEN["documents"]}
        pairs = await collect(cluster.cluster.hash_scan(t, batch_size=7))
        assert [h for _, h in pairs] == [golden_uuid[json.loads(k)] for k, _ in pairs]
        assert [k for k, _ in pairs] == [k for k, _ in rows]

    async def test_binary_text_has_crlf_lines_and_lenient_input(self, cluster: ContractTarget):
        """BINARY data prints as base64 in lines of 76 characters joined by CRLF; r.json reads
        blanks anywhere and missing or doubled padding; data after padding is refused."""
        t = await cluster.new_table()
        data = base64.b64encode(bytes(range(200))).decode()
        lines = "\\r\\n".join(data[i:i + 76] for i in range(0, len(data), 76))
        inputs = ['{"id":1,"b":{"$reql_type$":"BINARY","data":"%s"}}' % data,
                  '{"id":2,"b":{"$reql_type$":"BINARY","data":"AA\\r\\nE"}}',
                  '{"id":3,"b":{"$reql_type$":"BINARY","data":" AAE=="}}']
        res = await cluster.cluster.insert_texts(t, inputs)
        assert (res.inserted, res.errors) == (3, 0), res.first_error
        assert [doc for _, doc in await collect(cluster.cluster.scan(t))] == [
            '{"b":{"$reql_type$":"BINARY","data":"%s"},"id":1}' % lines,
            '{"b":{"$reql_type$":"BINARY","data":"AAE="},"id":2}',
            '{"b":{"$reql_type$":"BINARY","data":"AAE="},"id":3}']
        with pytest.raises(ClusterError, match="data found after padding"):  # the whole batch
            await cluster.cluster.insert_texts(
                t, ['{"id":4,"b":{"$reql_type$":"BINARY","data":"AAE=AAE="}}'])

    async def test_golden_range_digests(self, cluster: ContractTarget):
        t = await cluster.new_table()
        await cluster.cluster.insert_texts(t, [d["input"] for d in GOLDEN["documents"]])
        assert await cluster.cluster.range_digest(t) == GOLDEN["fold_digest_whole_table"]
        between = GOLDEN["fold_digest_between"]  # [lo, hi): after the key before lo, upto the last key
        ids = [json.loads(d)["id"] for d in GOLDEN["table_in_key_order"]]
        before = ids[ids.index(between["lower"]) - 1]
        got = await cluster.cluster.range_digest(t, after=json.dumps(before), upto=json.dumps(between["keys"][-1]))
        assert got == between["digest"]
        assert await cluster.cluster.range_digest(t, after='"n05"', upto='"n05"') == ""
        assert await cluster.cluster.range_digest(t, after='"zzz"') == ""

    async def test_scan_texts_are_the_canonical_texts_of_documents_and_keys(self, cluster: ContractTarget):
        """On the real server the adapter takes these bytes from a scan of whole documents:
        this checks that the server writes documents into a response exactly as
        ``to_json_string()`` prints them (numbers, TIME, BINARY, GEOMETRY, escapes)."""
        t = await cluster.new_table()
        c = cluster.cluster
        await c.insert_texts(t, [d["input"] for d in GOLDEN["documents"]])
        batches = [b async for b in c.scan_texts(t, batch_size=7)]
        assert all(1 <= len(b) <= 7 for b in batches)
        docs = [bytes(d).decode() for b in batches for d in b.docs]
        keys = [bytes(k).decode() for b in batches for k in b.keys]
        assert docs == GOLDEN["table_in_key_order"]
        assert keys == [json.dumps(json.loads(d)["id"]) for d in GOLDEN["table_in_key_order"]]
        assert [b.last_key() for b in batches] == [bytes(b.keys[-1]).decode() for b in batches]
        part = [bytes(d).decode() async for b in c.scan_texts(t, after=keys[3], upto=keys[10])
                for d in b.docs]
        assert part == docs[4:11]

    async def test_scan_texts_key_is_the_top_level_primary_key(self, cluster: ContractTarget):
        t = await cluster.new_table(primary_key="k")
        texts = ['{"a":{"k":"nested"},"b":[{"k":1},{"k":2}],"k":"top"}',
                 '{"k":5,"z":{"k":"x","y":"\\"k\\":7"}}', '{"k":[1,"a"]}']
        res = await cluster.cluster.insert_texts(t, texts)
        assert res.inserted == 3
        batches = [b async for b in cluster.cluster.scan_texts(t)]
        rows = [(bytes(k).decode(), bytes(d).decode()) for b in batches for k, d in zip(b.keys, b.docs)]
        assert rows == [('[1,"a"]', texts[2]), ("5", texts[1]), ('"top"', texts[0])]
        assert [row async for b in cluster.cluster.scan(t) for row in b] == rows

    async def test_key_bounds_are_the_first_and_last_keys(self, cluster: ContractTarget):
        t = await cluster.new_table()
        c = cluster.cluster
        assert await c.key_bounds(t) is None
        await c.insert_texts(t, [d["input"] for d in GOLDEN["documents"]])
        keys = [k for k, _ in await collect(c.scan(t))]
        assert await c.key_bounds(t) == (keys[0], keys[-1])

    async def test_segment_digests_are_r_uuid_of_the_json_array_of_document_hashes(self, cluster: ContractTarget):
        t = await cluster.new_table()
        c = cluster.cluster
        await c.insert_texts(t, [d["input"] for d in GOLDEN["documents"]])
        rows = await collect(c.scan(t))
        keys, texts = [k for k, _ in rows], [d for _, d in rows]
        golden_uuid = {d["canonical"]: d["uuid"] for d in GOLDEN["documents"]}

        def expected(part: list[str]) -> tuple[int, str]:
            hashes = [golden_uuid[text] for text in part]
            return len(part), r_uuid(json.dumps(hashes, separators=(",", ":")))

        ranges = [(None, keys[9]), (keys[9], keys[30]), (keys[30], None), (keys[5], keys[5]),
                  (None, None)]
        got = await c.segment_digests(t, ranges)
        assert got == [expected(texts[:10]), expected(texts[10:31]), expected(texts[31:]),
                       (0, r_uuid("[]")), expected(texts)]
        assert await c.segment_digests(t, []) == []

    async def test_chunk_digests(self, cluster: ContractTarget):
        t = await cluster.new_table()
        c = cluster.cluster
        await c.insert_texts(t, [d["input"] for d in GOLDEN["documents"]])
        rows = await collect(c.scan(t))
        keys = [k for k, _ in rows]
        mid = keys[len(keys) // 2]
        whole, low, high, empty = await c.chunk_digests(
            t, [(None, None), (None, mid), (mid, None), (mid, mid)], threshold="")
        assert whole == [(None, len(rows), GOLDEN["fold_digest_whole_table"])]
        assert low == [(mid, len(keys) // 2 + 1, await c.range_digest(t, upto=mid))]
        assert high == [(None, len(keys) - len(keys) // 2 - 1, await c.range_digest(t, after=mid))]
        assert empty == [(mid, 0, "")]
        (per_doc,) = await c.chunk_digests(t, [(None, None)], threshold="g")
        assert per_doc[:-1] == [(k, 1, h) for k, h in await collect(c.hash_scan(t))]
        assert per_doc[-1] == (None, 0, "")
        # Content-defined: a chunk ends after each key whose r.uuid is below the threshold.
        threshold = "%08x" % (2**32 // 4)
        (chunks,) = await c.chunk_digests(t, [(keys[0], None)], threshold=threshold)
        cuts = [k for k in keys[1:] if r_uuid(k) < threshold]
        assert 1 < len(cuts) < len(keys) - 1
        assert [u for u, _, _ in chunks] == cuts + [None]
        assert sum(n for _, n, _ in chunks) == len(keys) - 1
        # Each chunk after a cut folds from the cutting key's hash (the first from '').
        assert chunks == expected_chunks(rows[1:], threshold, None)
        # Keys left out; digests cut to their last 16 characters.
        (short,) = await c.chunk_digests(t, [(keys[0], None)], threshold=threshold, keys=False,
                                         digest_chars=16)
        assert short == [(None, n, d[20:]) for _, n, d in chunks]
        # Windows: positions after `after` (upto not used), chunked the same way.
        skip, limit = 3, len(keys) // 2
        (windowed, _) = await c.chunk_digests(
            t, [(keys[0], keys[1]), (keys[1], None)], threshold=threshold,
            windows=[(skip, limit), (0, 5)], keys=False)
        want = expected_chunks(rows[1 + skip:1 + skip + limit], threshold, None)
        assert windowed == [(None, n, d) for _, n, d in want]
        assert sum(n for _, n, _ in windowed) == limit
        (docs,) = await c.chunk_digests(t, [(keys[1], None)], threshold="g", windows=[(2, 4)],
                                        digest_chars=16)
        text = dict(rows)
        assert docs == [(k, 1, r_uuid(text[k])[20:]) for k in keys[4:8]] + [(None, 0, "")]

    async def test_mixed_key_types_in_server_order(self, cluster: ContractTarget):
        t = await cluster.new_table()
        order = GOLDEN["primary_key_order"]
        docs = ['{"id":%s}' % k for k in order["inserted"]]
        res = await cluster.cluster.insert_texts(t, docs)
        assert (res.inserted, res.errors) == (len(docs), 0)
        assert [k for k, _ in await collect(cluster.cluster.scan(t))] == order["order_by_index_id"]

    @pytest.mark.parametrize("case", GOLDEN["primary_key_rejected"], ids=lambda c: c["key"])
    async def test_rejected_keys_come_back_in_the_result(self, cluster: ContractTarget, case):
        key = {"null": "null", "object": '{"a":1}'}.get(case["key"])
        if key is None:
            n = int(case["key"].split()[2])
            sample = case["insert_result"].get("first_error", "")
            key = '"%s"' % (("x" if '"x' in sample else "z") * n if sample else "y" * n)
        t = await cluster.new_table()
        res = await cluster.cluster.insert_texts(t, ['{"id":%s,"v":1}' % key])
        expected = case["insert_result"]
        assert (res.inserted, res.errors) == (expected["inserted"], expected["errors"])
        assert res.first_error == expected.get("first_error")

    # --- conflicts, deletes, reads --------------------------------------------------------
    async def test_conflict_modes(self, cluster: ContractTarget):
        t = await cluster.new_table()
        c = cluster.cluster
        assert (await c.insert_texts(t, ['{"id":"a"}'])).inserted == 1
        dup = await c.insert_texts(t, ['{"id":"a"}'])
        expected = GOLDEN["insert_duplicate_conflict_error"]
        assert (dup.inserted, dup.errors, dup.first_error) == (0, 1, expected["first_error"])
        rep = await c.insert_texts(t, ['{"id":"a","v":2}', '{"id":"b","v":1}'], conflict="replace")
        assert (rep.replaced, rep.inserted, rep.errors) == (1, 1, 0)
        same = await c.insert_texts(t, ['{"v":2,"id":"a"}'], conflict="replace")
        assert (same.unchanged, same.replaced) == (1, 0)
        skip = await c.insert_texts(t, ['{"id":"a","v":3}'], conflict="skip")
        assert (skip.unchanged, skip.replaced, skip.errors) == (1, 0, 0)
        assert await c.get_docs(t, ['"a"']) == [('"a"', '{"id":"a","v":2}')]

    async def test_delete_and_get_docs(self, cluster: ContractTarget):
        t = await cluster.new_table()
        c = cluster.cluster
        await c.insert_texts(t, ['{"id":%d,"n":%d}' % (i, i * i) for i in range(10)])
        got = await c.get_docs(t, ["7", "3", "42", '"3"', "5"])
        assert got == [("3", '{"id":3,"n":9}'), ("5", '{"id":5,"n":25}'), ("7", '{"id":7,"n":49}')]
        res = await c.delete_keys(t, ["3", "99"])
        assert (res.deleted, res.errors) == (1, 0)
        assert [k for k, _ in await collect(c.scan(t))] == [str(i) for i in range(10) if i != 3]
        assert await c.get_docs(t, ["3"]) == []

    async def test_scan_bounds_batches_and_resume(self, cluster: ContractTarget):
        t = await cluster.new_table()
        c = cluster.cluster
        keys = list(range(25))
        random.Random(1).shuffle(keys)
        await c.insert_texts(t, ['{"id":%d}' % i for i in keys])
        batches = [b async for b in c.scan(t, batch_size=7)]
        assert all(1 <= len(b) <= 7 for b in batches)
        assert [k for b in batches for k, _ in b] == [str(i) for i in range(25)]
        assert [k for k, _ in await collect(c.scan(t, after="9"))] == [str(i) for i in range(10, 25)]
        assert [k for k, _ in await collect(c.scan(t, after="3", upto="7"))] == ["4", "5", "6", "7"]
        assert [k for k, _ in await collect(c.scan(t, upto="2"))] == ["0", "1", "2"]
        assert [k for k, _ in await collect(c.scan(t, after="3.5", upto="5.5"))] == ["4", "5"]
        assert await collect(c.scan(t, after="24")) == []
        pairs = await collect(c.hash_scan(t, after="20"))
        assert pairs == [(str(i), r_uuid('{"id":%d}' % i)) for i in range(21, 25)]

    # --- schema -------------------------------------------------------------------------
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

    # --- changefeeds --------------------------------------------------------------------
    async def test_changefeed_ready_then_changes(self, cluster: ContractTarget):
        c = cluster.cluster
        t = await cluster.new_table()
        await c.insert_texts(t, ['{"id":1,"v":"before"}'])
        feed = c.changes(t)
        try:
            assert await next_event(feed) == FeedReady()
            await c.insert_texts(t, ['{"v":"x","id":5}'])
            assert await next_event(feed) == FeedChange("5", '{"id":5,"v":"x"}')
            await c.insert_texts(t, ['{"id":5,"v":"y"}'], conflict="replace")
            assert await next_event(feed) == FeedChange("5", '{"id":5,"v":"y"}')
            await c.delete_keys(t, ["1"])
            assert await next_event(feed) == FeedChange("1", None)
        finally:
            await feed.aclose()

    async def test_changefeed_overflow_is_reported_and_feed_continues(self, cluster: ContractTarget):
        # A small changefeed_queue_size overflows at once (observed on 2.4.4: 1,000 inserts
        # into a feed of queue size 10 -> 10 changes and "skipped 990 elements", in some
        # order); the feed then goes on delivering.
        c = cluster.cluster
        t = await cluster.new_table()
        feed = c.changes(t, queue_size=10)
        try:
            assert await next_event(feed) == FeedReady()
            await c.insert_texts(t, ['{"id":%d}' % i for i in range(1000)])
            await asyncio.sleep(0.5)
            changes, overflows = [], []
            while len(changes) + sum(o.skipped for o in overflows) < 1000:
                event = await next_event(feed)
                (overflows if isinstance(event, FeedOverflow) else changes).append(event)
            # how many arrive before the queue fills depends on how fast the driver reads
            assert overflows and all(isinstance(e, FeedChange) for e in changes)
            assert overflows[0].message == (
                f"Changefeed cache over array size limit, skipped {overflows[0].skipped} elements.")
            assert len({e.key for e in changes}) == len(changes)
            assert all(e.doc == '{"id":%s}' % e.key for e in changes)
            await c.insert_texts(t, ['{"id":5000}'])
            assert await next_event(feed) == FeedChange("5000", '{"id":5000}')
        finally:
            await feed.aclose()

    # --- users, permissions, the write-hook fence ------------------------------------------
    async def test_users_and_permission_rows(self, cluster: ContractTarget):
        c, user = cluster.cluster, "drtool_test_u_" + uuid.uuid4().hex[:8]
        t = await cluster.new_table()
        try:
            assert await c.ensure_user(user, "pw-1") is True
            assert await c.ensure_user(user, "pw-2") is False  # existing: password set again
            users = await c.list_users()
            assert UserInfo(user, True) in users and UserInfo("admin", False) in users
            assert [u.name for u in users] == sorted(u.name for u in users)
            assert await c.grant(user, {"read": True, "write": True}) == (
                None, {"read": True, "write": True})
            assert await c.grant(user, {"write": False}, db=cluster.db) == (None, {"write": False})
            assert await c.grant(user, {"write": True, "config": False}, db=t.db, table=t.table) == (
                None, {"config": False, "write": True})
            mine = [row for row in await c.list_permissions() if row.user == user]
            assert mine == [PermissionRow(user, None, None, {"read": True, "write": True}),
                            PermissionRow(user, cluster.db, None, {"write": False}),
                            PermissionRow(user, t.db, t.table, {"config": False, "write": True})]
            # None removes one override; a row without overrides disappears
            assert await c.grant(user, {"config": None}, db=t.db, table=t.table) == (
                {"config": False, "write": True}, {"write": True})
            assert await c.grant(user, {"write": None}, db=t.db, table=t.table) == (
                {"write": True}, None)
            assert await c.grant(user, {"write": None}, db=t.db, table=t.table) == (None, None)
            assert len([r for r in await c.list_permissions() if r.user == user]) == 2
            with pytest.raises(ClusterError, match="admin"):
                await c.grant("admin", {"write": False}, db=cluster.db)
            with pytest.raises(NotFound, match="not found"):
                await c.grant(user + "_nobody", {"write": False}, db=cluster.db)
        finally:
            await c.drop_user(user)
        assert user not in [u.name for u in await c.list_users()]
        assert [r for r in await c.list_permissions() if r.user == user] == []
        await c.drop_user(user)  # missing: not an error

    async def _app_user(self, cluster: ContractTarget, perms: dict) -> tuple[str, Cluster]:
        user, password = "drtool_test_u_" + uuid.uuid4().hex[:8], "pw-" + uuid.uuid4().hex[:6]
        await cluster.cluster.ensure_user(user, password)
        await cluster.cluster.grant(user, perms)
        return user, await cluster.connect_as(user, password)

    async def test_write_permission_fence(self, cluster: ContractTarget):
        c = cluster.cluster
        t = await cluster.new_table()
        user, app = await self._app_user(cluster, {"read": True, "write": True})
        try:
            assert (await app.insert_texts(t, ['{"id":1}'])).inserted == 1
            assert await c.grant(user, {"write": False}, db=t.db) == (None, {"write": False})
            with pytest.raises(PermissionDenied,
                               match=f"User `{user}` does not have the required `write` permission"):
                await app.insert_texts(t, ['{"id":2}'])
            with pytest.raises(PermissionDenied):
                await app.delete_keys(t, ["1"])
            await c.grant(user, {"write": None}, db=t.db)  # unfence: the global grant applies again
            assert (await app.insert_texts(t, ['{"id":2}'])).inserted == 1
            # writing with ignore_write_hook needs the config permission (so does reading the
            # hook): refused, whether the table has a hook or not
            with pytest.raises(PermissionDenied, match="`config` permission"):
                await app.insert_texts(t, ['{"id":3}'], ignore_write_hook=True)
        finally:
            await app.close()
            await c.drop_user(user)

    async def test_reading_users_needs_the_rethinkdb_database(self, cluster: ContractTarget):
        user, app = await self._app_user(cluster, {"read": True, "write": True})
        try:
            with pytest.raises(PermissionDenied, match="`read` permission"):
                await app.list_users()
            with pytest.raises(PermissionDenied):
                await app.list_permissions()
        finally:
            await app.close()
            await cluster.cluster.drop_user(user)

    async def test_rejecting_write_hook_fence(self, cluster: ContractTarget):
        c = cluster.cluster
        t = await cluster.new_table()
        await c.insert_texts(t, ['{"id":1}'])
        message = "drtool fence: generation 7 is on the standby"
        await c.set_rejecting_write_hook(t, message)
        blob = (await c.table_meta(t)).write_hook
        # drtool recognises its fences by the message, which the blob carries as text
        assert is_drtool_fence(blob) and is_drtool_fence(blob, message)
        assert not is_drtool_fence(blob, message + " now")
        refused = "Error in write hook: " + message
        res = await c.insert_texts(t, ['{"id":2}'])  # even admin is refused
        assert (res.inserted, res.errors, res.first_error) == (0, 1, refused)
        res = await c.insert_texts(t, ['{"id":1,"v":1}'], conflict="replace")
        assert (res.replaced, res.errors, res.first_error) == (0, 1, refused)
        res = await c.delete_keys(t, ["1"])
        assert (res.deleted, res.errors, res.first_error) == (0, 1, refused)
        assert (await c.insert_texts(t, ['{"id":3}'], ignore_write_hook=True)).inserted == 1
        assert (await c.delete_keys(t, ["3"], ignore_write_hook=True)).deleted == 1
        await c.set_rejecting_write_hook(t, "drtool fence: déjà fenced")
        assert is_drtool_fence((await c.table_meta(t)).write_hook, "drtool fence: déjà fenced")
        await c.set_write_hook(t, None)
        assert (await c.insert_texts(t, ['{"id":2}'])).inserted == 1
        assert not is_drtool_fence((await c.table_meta(t)).write_hook)
    # --- drtool's own state: compare-and-set on the server's clock -----------------------
    async def test_server_time_is_the_servers_clock(self, cluster: ContractTarget):
        c = cluster.cluster
        t = await cluster.new_table()
        first = await c.server_time()
        written = await c.write_state(t, '"hb"', '{"id":"hb","seq":1}', ALWAYS,
                                      now_fields={"time": 0})
        assert written.applied and first <= written.now <= await c.server_time()
        stored = json.loads(written.doc)
        assert stored["time"]["$reql_type$"] == "TIME"
        assert abs(stored["time"]["epoch_time"] - written.now) < 0.002
        assert await c.get_docs(t, ['"hb"']) == [('"hb"', written.doc)]

    async def test_write_state_guards_lease_style(self, cluster: ContractTarget):
        c = cluster.cluster
        t = await cluster.new_table()
        key = '"p:runner"'

        def holder(name: str) -> str:
            return '{"holder":"%s","id":"p:runner"}' % name

        def acquire(name: str) -> Guard:  # absent, mine, or expired
            return Guard(fields=(("holder", json.dumps(name)),), expired="expires")

        a = await c.write_state(t, key, holder("a"), acquire("a"), now_fields={"expires": 30})
        assert a.applied and json.loads(a.doc)["holder"] == "a"
        b = await c.write_state(t, key, holder("b"), acquire("b"), now_fields={"expires": 30})
        assert (b.applied, b.doc) == (False, a.doc)  # held and not expired: refused, shown
        renew = Guard(if_absent=False, fields=(("holder", '"a"'),))
        expired = await c.write_state(t, key, holder("a"), renew, now_fields={"expires": -1})
        assert expired.applied
        taken = await c.write_state(t, key, holder("b"), acquire("b"), now_fields={"expires": 30})
        assert taken.applied and json.loads(taken.doc)["holder"] == "b"
        assert not (await c.write_state(t, key, holder("a"), renew)).applied
        release_a = await c.write_state(t, key, None, Guard(fields=(("holder", '"a"'),)))
        assert (release_a.applied, release_a.doc) == (False, taken.doc)
        release_b = await c.write_state(t, key, None, Guard(fields=(("holder", '"b"'),)))
        assert (release_b.applied, release_b.doc) == (True, None)
        assert await c.get_docs(t, [key]) == []
        again = await c.write_state(t, key, None, Guard(fields=(("holder", '"b"'),)))
        assert again.applied  # releasing what is not there: nothing to do

    async def test_write_state_compare_and_set_on_a_number(self, cluster: ContractTarget):
        c = cluster.cluster
        t = await cluster.new_table()
        key = '"p"'

        def cas(expected: int) -> Guard:  # generation 0 also means "no document yet"
            return Guard(if_absent=expected == 0, fields=(("generation", str(expected)),))

        first = await c.write_state(t, key, '{"generation":1,"id":"p"}', cas(0))
        assert first.applied
        stale = await c.write_state(t, key, '{"generation":2,"id":"p","by":"x"}', cas(0))
        assert (stale.applied, stale.doc) == (False, '{"generation":1,"id":"p"}')
        assert (await c.write_state(t, key, '{"generation":2,"id":"p"}', cas(1))).applied
        missing_field = Guard(if_absent=False, fields=(("step", "null"),))
        assert (await c.write_state(t, key, '{"generation":2,"id":"p","step":"x"}',
                                    missing_field)).applied
        with pytest.raises(NotFound):
            await c.write_state(TableName(cluster.db, "nope"), key, '{"id":"p"}', ALWAYS)

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
