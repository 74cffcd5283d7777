"""diff / reconcile in the core, on two fake clusters: exact key lists for every position and
key type, schema differences, reconcile in both directions, dry run, a source that changes
while reconcile runs."""

from __future__ import annotations

import random

import pytest

from drtool.reql import canonical
from drtool.cluster.base import Cluster
from drtool.compare.diff import DiffOptions, diff_table
from drtool.compare.diff_ranges import (
    PER_DOC,
    WHOLE,
    Region,
    SearchParams,
    differing_runs,
    split_region,
    threshold_for,
)
from drtool.compare.reconcile import ReconcileOptions, reconcile_table
from drtool.model import ClusterConfig, IndexDef, TableName
from drtool.reql.ordering import key_order
from tests.conftest import PRIMARY_HOST, STANDBY_HOST, sample_docs
from tests.golden import GOLDEN

T = TableName("app", "t")


def connect(server, host=PRIMARY_HOST, role="primary"):
    return server.connect(ClusterConfig(role=role, hosts=(host,)))


@pytest.fixture
async def both(primary_server, standby_server):
    p, s = connect(primary_server), connect(standby_server, STANDBY_HOST, "standby")
    yield p, s
    await p.close()
    await s.close()


async def load_table(server, name: str, docs: list[str], *, primary_key: str = "id") -> TableName:
    table = TableName.parse(name)
    cluster = connect(server)
    await cluster.ensure_db(table.db)
    await cluster.create_table(table, primary_key=primary_key, shards=1, replicas=1)
    for start in range(0, len(docs), 1000):
        assert (await cluster.insert_texts(table, docs[start:start + 1000])).errors == 0
    await cluster.close()
    return table


async def load_both(primary_server, standby_server, docs, name="app.t"):
    await load_table(primary_server, name, docs)
    await load_table(standby_server, name, docs)


def key_of(doc: str) -> str:
    return canonical.dumps(canonical.parse(doc)["id"])


def expected(primary: list[str], standby: list[str]):
    """Brute force: missing on standby, extra on standby, changed (each in key order)."""
    p = {key_of(d): d for d in primary}
    s = {key_of(d): d for d in standby}
    order = lambda keys: sorted(keys, key=key_order)  # noqa: E731
    return (order(p.keys() - s.keys()), order(s.keys() - p.keys()),
            order(k for k in p.keys() & s.keys() if p[k] != s[k]))


def found(d):
    return d.missing, d.extra, d.changed


async def test_equal_tables_cost_two_queries(both, primary_server, standby_server):
    await load_both(primary_server, standby_server, sample_docs(3000, pad=50))
    d = await diff_table(*both, T)
    assert d.equal and d.keys_listed
    assert (d.source_count, d.target_count) == (3000, 3000)
    assert d.traffic.queries == 2 and d.traffic.bytes < 4000


@pytest.mark.parametrize("kind", ["changed", "missing", "extra"])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
async def test_one_difference_at_first_middle_last(both, primary_server, standby_server, kind, where):
    docs = sample_docs(2000, pad=20)
    await load_both(primary_server, standby_server, docs)
    index = {"first": 0, "middle": 1000, "last": 1999}[where]
    key = key_of(docs[index])
    if kind == "changed":
        standby_server.put_texts(T, ['{"id":%s,"v":"changed"}' % key])
    elif kind == "missing":
        standby_server.delete(T, [key])
    else:  # extra on the standby: a key beyond / before / between the primary's
        key = {"first": '"a"', "middle": '"k0001000x"', "last": '"z"'}[where]
        standby_server.put_texts(T, ['{"id":%s}' % key])
    d = await diff_table(*both, T)
    assert not d.equal and d.keys_listed
    assert found(d) == tuple([key] if k == kind else [] for k in ("missing", "extra", "changed"))
    assert d.traffic.bytes < 25_000  # far less than the ~2000 * 100 bytes of a hash stream


async def test_many_differences_with_skewed_keys_are_exact(both, primary_server, standby_server):
    rng = random.Random(7)
    # Skewed: dense integers, a cluster of floats between two of them, arrays, then strings.
    keys = [str(i) for i in range(3000)] + [f"5.{i:04d}" for i in range(1, 1500)]
    keys += ["[%d,\"a\"]" % i for i in range(300)] + ['"s%05d"' % i for i in range(500)]
    docs = ['{"id":%s,"v":%d}' % (k, rng.randrange(10**6)) for k in keys]
    await load_both(primary_server, standby_server, docs)
    chosen = rng.sample(keys, 150)
    standby_server.put_texts(T, ['{"id":%s,"v":"x"}' % k for k in chosen[:50]])
    standby_server.delete(T, chosen[50:100])
    primary_server.delete(T, chosen[100:150])
    standby_server.put_texts(T, ['{"id":"s%05dz"}' % i for i in range(40)])
    d = await diff_table(*both, T)
    want = expected(primary_server.texts(T), standby_server.texts(T))
    assert found(d) == want
    assert [len(x) for x in want] == [50, 90, 50]


async def test_sparse_differences_cost_a_fraction_of_a_hash_stream(both, primary_server, standby_server):
    docs = sample_docs(8000, pad=300)
    await load_both(primary_server, standby_server, docs)
    keys = random.Random(3).sample([key_of(d) for d in docs], 8)  # 0.1%
    standby_server.put_texts(T, ['{"id":%s,"v":"x"}' % k for k in keys[:4]])
    standby_server.delete(T, keys[4:])
    d = await diff_table(*both, T)
    assert d.changed == sorted(keys[:4], key=key_order) and d.missing == sorted(keys[4:], key=key_order)
    pairs = sum(len(key_of(x)) + 36 + 6 for x in docs) * 2  # every [key, hash] of both sides
    assert d.traffic.bytes < pairs / 5


async def test_every_key_type_in_one_table(both, primary_server, standby_server):
    keys = GOLDEN["primary_key_order"]["inserted"]
    docs = ['{"id":%s,"n":1}' % k for k in keys]
    await load_both(primary_server, standby_server, docs)
    order = GOLDEN["primary_key_order"]["order_by_index_id"]
    changed, missing = order[::3], order[1::3]
    standby_server.put_texts(T, ['{"id":%s,"n":2}' % k for k in changed])
    standby_server.delete(T, missing)
    standby_server.put_texts(T, ['{"id":[[[]]]}', '{"id":-1e300}', '{"id":"\U0001f600"}'])
    d = await diff_table(*both, T, options=_tiny())
    assert found(d) == expected(primary_server.texts(T), standby_server.texts(T))
    assert d.changed == changed and d.missing == missing
    assert d.extra == sorted(["[[[]]]", "-1e300", '"\U0001f600"'], key=key_order)


def _tiny():
    """Search parameters that force several levels of splitting even on small tables."""
    return DiffOptions(search=SearchParams(leaf_size=1, fanout=2, top_chunk_min=2, top_chunk_max=4))


async def test_empty_tables_and_one_empty_side(both, primary_server, standby_server):
    await load_both(primary_server, standby_server, [])
    assert (await diff_table(*both, T)).equal
    standby_server.put_texts(T, sample_docs(30, pad=5))
    d = await diff_table(*both, T)
    assert d.extra == [key_of(x) for x in sample_docs(30, pad=5)] and not d.missing
    assert (d.source_count, d.target_count) == (0, 30)


async def test_table_missing_on_one_side(both, primary_server, standby_server):
    await load_table(primary_server, "app.t", sample_docs(25, pad=5))
    d = await diff_table(*both, T)
    assert not d.equal and not d.keys_listed
    assert (d.missing_count, d.extra_count, d.source_count) == (25, 0, 25)
    assert [(s.item, s.source, s.target) for s in d.schema] == [("table", "present", "missing")]
    reverse = await diff_table(both[1], both[0], T, source_role="standby", target_role="primary")
    assert (reverse.missing_count, reverse.extra_count) == (0, 25)


async def test_schema_differences(both, primary_server, standby_server):
    await load_both(primary_server, standby_server, sample_docs(10, pad=5))
    p, s = both
    blob = primary_server.index_blob
    await p.create_index(T, IndexDef("same", blob("a")))
    await s.create_index(T, IndexDef("same", blob("a")))
    await p.create_index(T, IndexDef("only_p", blob("b")))
    await s.create_index(T, IndexDef("only_s", blob("c")))
    await p.create_index(T, IndexDef("other", blob("d")))
    await s.create_index(T, IndexDef("other", blob("e")))
    await p.set_write_hook(T, primary_server.hook_blob())
    d = await diff_table(p, s, T)
    assert d.documents_equal and not d.equal
    assert [(x.item, x.name, x.source, x.target) for x in d.schema] == [
        ("index", "only_p", "present", "missing"),
        ("index", "only_s", "missing", "present"),
        ("index", "other", "present", "another function"),
        ("write hook", "", f"{len(primary_server.hook_blob())}-byte function", "none"),
    ]
    assert "index only_p: present on primary, missing on standby" in [
        x.describe("primary", "standby") for x in d.schema]


async def test_primary_key_difference_is_reported_not_compared(both, primary_server, standby_server):
    await load_table(primary_server, "app.t", ['{"id":1,"k":2}'])
    await load_table(standby_server, "app.t", ['{"id":1,"k":2}'], primary_key="k")
    d = await diff_table(*both, T)
    assert [(x.item, x.source, x.target) for x in d.schema] == [("primary key", "'id'", "'k'")]
    assert not d.keys_listed and d.notes


async def test_default_chunk_digests_equal_the_fakes(both, primary_server, standby_server):
    """The reference implementation in Cluster (client-side from scan) agrees with the fake."""
    await load_table(primary_server, "app.t", sample_docs(500, pad=5))
    fake = both[0]

    class ScanOnly(Cluster):  # every abstract method delegates; chunk_digests is the base's
        pass

    for name in Cluster.__abstractmethods__:
        setattr(ScanOnly, name, lambda self, *a, _n=name, **k: getattr(fake, _n)(*a, **k))
    ScanOnly.__abstractmethods__ = frozenset()
    plain = ScanOnly()
    ranges = [(None, '"k0000100"'), ('"k0000100"', '"k0000100"'), ('"k0000100"', None)]
    for threshold in (WHOLE, PER_DOC, threshold_for(16)):
        assert await plain.chunk_digests(T, ranges, threshold=threshold) == \
            await fake.chunk_digests(T, ranges, threshold=threshold)
        options = dict(threshold=threshold, windows=[(5, 50), (0, 3), (390, 20)], keys=False,
                       digest_chars=16)
        windowed = await plain.chunk_digests(T, ranges, **options)
        assert windowed == await fake.chunk_digests(T, ranges, **options)
        assert [sum(n for _, n, _ in c) for c in windowed] == [50, 3, 9]  # 399 after k0000100


def test_anchors_are_equal_chunks_in_order_and_never_repeated_digests():
    s = [("a", 2, "x"), ("b", 2, "y"), ("c", 1, "d"), ("d", 1, "d"), ("e", 3, "z"), (None, 0, "w")]
    t = [(None, 2, "x"), (None, 3, "q"), (None, 1, "d"), (None, 3, "z"), (None, 0, "w")]
    # x, z and w anchor; y/q differ; "d" is twice on the source: never an anchor.
    assert differing_runs(s, t) == [(1, 4, 1, 3)]
    assert differing_runs(s, s[:1] + s[2:]) == [(1, 4, 1, 3)]  # the "d"s stay in the run
    assert differing_runs(s[:2] + s[4:], s[:1] + s[4:]) == [(1, 2, 1, 1)]
    # Crossing pairs: the first anchors (x), the others would go backwards on the target.
    assert differing_runs(t, list(reversed(t))) == [(0, 0, 0, 4), (1, 5, 5, 5)]
    region = Region('"a0"', None, (10, 9), (10, 9), 0)
    assert split_region(region, s, t, 2, keyed=False) == [
        Region('"a0"', None, (12, 4), (12, 4), 2)]
    assert split_region(region, s, t, 2, keyed=True) == [Region("a", "d", (0, 4), (0, 4), 2)]


@pytest.mark.parametrize("keyed_above", [0, 10**9])
@pytest.mark.parametrize("seed", range(4))
async def test_random_differences_match_brute_force(both, primary_server, standby_server,
                                                    seed, keyed_above):
    """Dense random differences (some at cut keys, so the sides cut differently) with small
    chunks: the first cut by the source's keys or by windows; every differing key found."""
    rng = random.Random(seed)
    docs = sample_docs(1200, pad=10)
    await load_both(primary_server, standby_server, docs)
    keys = [key_of(d) for d in docs]
    for server in (primary_server, standby_server):
        chosen = rng.sample(keys, 40)
        server.put_texts(T, ['{"id":%s,"v":%d}' % (k, rng.randrange(3)) for k in chosen[:15]])
        server.delete(T, chosen[15:30])
        server.put_texts(T, ['{"id":"%s%d"}' % (k[1:-1], rng.randrange(9)) for k in chosen[30:]])
    params = SearchParams(leaf_size=3, fanout=3, top_chunk_min=4, top_chunk_max=8,
                          keyed_above=keyed_above)
    d = await diff_table(*both, T, options=DiffOptions(search=params))
    assert found(d) == expected(primary_server.texts(T), standby_server.texts(T))
    regions = d.regions
    for (_, upto), (after, _) in zip(regions, regions[1:]):
        assert after is not None and upto is not None and key_order(upto) <= key_order(after)
    for key in d.missing + d.extra + d.changed:
        assert any((a is None or key_order(a) < key_order(key))
                   and (u is None or key_order(key) <= key_order(u)) for a, u in regions)


# --- reconcile ------------------------------------------------------------------------------
async def _diverge(primary_server, standby_server):
    docs = sample_docs(1500, pad=30)
    await load_both(primary_server, standby_server, docs)
    standby_server.put_texts(T, ['{"id":"k0000000","v":1}', '{"id":"k0000700","v":1}',
                                 '{"id":"zz-extra"}'])
    standby_server.delete(T, ['"k0001499"', '"k0000300"'])
    primary_server.put_texts(T, ['{"id":"k0000900","v":2}'])


@pytest.mark.parametrize("direction", ["primary-to-standby", "standby-to-primary"])
async def test_reconcile_both_directions_then_equal(both, primary_server, standby_server, direction):
    await _diverge(primary_server, standby_server)
    p, s = both
    await p.create_index(T, IndexDef("by_n", primary_server.index_blob("n")))
    await s.set_write_hook(T, standby_server.hook_blob())
    source, target = (p, s) if direction == "primary-to-standby" else (s, p)
    source_server = primary_server if source is p else standby_server
    target_server = standby_server if source is p else primary_server
    source_texts = source_server.texts(T)
    r = await reconcile_table(source, target, T, source_role=source.description.split()[0],
                              target_role=target.description.split()[0])
    assert r.equal_after and r.rounds == 1 and not r.unresolved
    assert target_server.texts(T) == source_texts == source_server.texts(T)
    assert (r.written, r.deleted) == ((5, 1) if source is p else (4, 2))
    assert target_server.table_obj(T).hooked_writes == 0  # ignore_write_hook on every write
    assert (await diff_table(p, s, T)).equal
    assert (await target.table_meta(T)).indexes == (await source.table_meta(T)).indexes


async def test_reconcile_dry_run_writes_nothing(both, primary_server, standby_server):
    await _diverge(primary_server, standby_server)
    await both[0].create_index(T, IndexDef("by_n", primary_server.index_blob("n")))
    before = standby_server.texts(T)
    r = await reconcile_table(*both, T, options=ReconcileOptions(dry_run=True))
    assert standby_server.texts(T) == before
    assert (await both[1].table_meta(T)).indexes == ()
    assert not r.equal_after and r.written == r.deleted == 0
    assert r.actions == ["create index by_n"]
    assert r.to_write == ['"k0000000"', '"k0000300"', '"k0000700"', '"k0000900"', '"k0001499"']
    assert r.to_delete == ['"zz-extra"']


async def test_reconcile_creates_missing_table_and_drops_only_named_extra(both, primary_server, standby_server):
    await load_table(primary_server, "app.t", sample_docs(1200, pad=5))
    await both[0].create_index(T, IndexDef("by_n", primary_server.index_blob("n")))
    await both[0].set_write_hook(T, primary_server.hook_blob())
    r = await reconcile_table(*both, T)
    assert r.equal_after and r.written == 1200
    assert standby_server.texts(T) == primary_server.texts(T)
    assert (await diff_table(*both, T)).equal

    other = TableName("app", "only_standby")
    await load_table(standby_server, "app.only_standby", sample_docs(3))
    kept = await reconcile_table(*both, other)
    assert kept.unresolved and standby_server.texts(other)
    dropped = await reconcile_table(*both, other, options=ReconcileOptions(drop_tables=frozenset({other})))
    assert dropped.equal_after and other not in await both[1].list_tables()


async def test_reconcile_repairs_documents_changed_on_the_source_meanwhile(both, primary_server, standby_server):
    await _diverge(primary_server, standby_server)
    p, s = both
    changed_behind = []

    class Busy(type(p)):  # the application writes to the source right after drtool reads it
        async def get_docs(self, table, keys):
            rows = await super().get_docs(table, keys)
            if not changed_behind:
                changed_behind.append(True)
                primary_server.put_texts(T, ['{"id":"k0000000","v":"newer"}'])
            return rows

    busy = Busy(primary_server, p.description, (PRIMARY_HOST,))
    r = await reconcile_table(busy, s, T)
    assert changed_behind and r.rounds == 2 and r.equal_after and not r.still_changing
    assert '{"id":"k0000000","v":"newer"}' in standby_server.texts(T)
    assert standby_server.texts(T) == primary_server.texts(T)


async def test_reconcile_gives_up_when_the_source_never_settles(both, primary_server, standby_server):
    await _diverge(primary_server, standby_server)
    p, s = both
    counter = []

    class Restless(type(p)):
        async def get_docs(self, table, keys):
            rows = await super().get_docs(table, keys)
            counter.append(1)
            primary_server.put_texts(T, ['{"id":"k0000000","v":%d}' % len(counter)])
            return rows

    r = await reconcile_table(Restless(primary_server, p.description, (PRIMARY_HOST,)), s, T,
                              options=ReconcileOptions(max_rounds=2))
    assert r.rounds == 2 and r.remaining == 1 and not r.equal_after
    assert "still differ after 2 rounds" in r.unresolved[0]
    assert r.still_changing  # nothing else is wrong: failback lets the final diff finish it
    assert primary_server.texts(T) != standby_server.texts(T)


@pytest.mark.parametrize("threshold,windows,keys", [
    (WHOLE, None, True), (threshold_for(128), None, True), (threshold_for(128), None, False),
    (threshold_for(8), [(5, 40)], False), (PER_DOC, [(5, 6)], True)])
async def test_query_overhead_covers_the_serialized_fold_term(threshold, windows, keys):
    """The bytes counted per query (QUERY_OVERHEAD + the spec) cover what the real adapter
    sends: the driver's serialized query, protocol header included (built, not run)."""
    from rethinkdb import RethinkDB
    from rethinkdb.net import Query

    from drtool.cluster.base import chunk_spec
    from drtool.cluster.rethink.cluster import RethinkCluster
    from drtool.compare.diff_ranges import QUERY_OVERHEAD

    class Capture:
        description = "capture"

        async def fetch(self, query, table=None, **opts):
            self.query = query
            return []

    session, table = Capture(), TableName("a_database_name", "a_table_name")
    cluster = RethinkCluster(session, RethinkDB())
    cluster._pks[table] = "primary_key_field"
    ranges = [('"k0000001"', '"k0000100"')]
    await cluster.chunk_digests(table, ranges, threshold=threshold, windows=windows, keys=keys,
                                digest_chars=16)
    sent = len(Query(1, 1, session.query, {"db": "a_database_name"}).serialize())
    spec = len(chunk_spec(ranges, windows))
    assert 600 < sent - spec < QUERY_OVERHEAD - 200  # 200: response header and batch framing


@pytest.mark.parametrize("count", [1, 3, 5, 40])
async def test_segment_digest_traffic_covers_what_the_real_adapter_sends(count):
    """Side.segment_digests counts, per query the real adapter runs, QUERY_OVERHEAD + the
    spec sent and the rows received: as many queries as the adapter builds, each costing at
    least its driver-serialized size (built, not run)."""
    import json

    from rethinkdb import RethinkDB
    from rethinkdb.net import Query

    from drtool.cluster.rethink.cluster import RethinkCluster
    from drtool.compare.diff_ranges import QUERY_OVERHEAD, Side

    class Capture:
        description = "capture"

        def __init__(self):
            self.sizes, self.received = [], 0

        async def fetch(self, query, table=None, **opts):
            self.sizes.append(len(Query(1, 1, query, {"db": "a_database_name"}).serialize()))
            spec = json.loads(query._args[0]._args[0].data)  # r.json(spec).map(...)
            rows = [[i, 100 + i, "%036d" % i] for i, _, _ in spec]  # as the server answers
            self.received += sum(len(json.dumps(row, separators=(",", ":"))) + 1 for row in rows)
            return rows

    session, table = Capture(), TableName("a_database_name", "a_table_name")
    cluster = RethinkCluster(session, RethinkDB())
    cluster._pks[table] = "primary_key_field"
    keys = [None] + ['"k%07d"' % (1000 * i) for i in range(1, count)] + [None]
    ranges = list(zip(keys[:-1], keys[1:]))
    side = Side(cluster, table, SearchParams())
    assert len(await side.segment_digests(ranges)) == count
    assert side.traffic.queries == len(session.sizes) <= 4  # queries run in parallel
    assert side.traffic.received == session.received
    overhead = side.traffic.sent - sum(session.sizes)  # left for response headers and framing
    assert 200 * len(session.sizes) < overhead < QUERY_OVERHEAD * len(session.sizes)
