"""Bench of ``drtool diff`` / ``reconcile`` (issue 5) against the per-row hash stream.

    python bench/diff.py [--docs 200000] [--doc-size 470] [--fraction 0.001]

Two tables with the same generated documents, then ``--fraction`` of the documents changed,
deleted or added (a third each) on the standby. Measured: one server-side digest of the table
(the time yardstick), drtool's digest search (bytes and time, result checked against the
injected differences), the naive approach (every ``[key, r.uuid(doc)]`` pair of both sides,
merged client-side), a reconcile, and a diff of the now identical tables.

Modes: the in-memory fake by default (times are Python's, not a server's); a real server when
``DRTOOL_BENCH_RETHINKDB=host:port`` (primary) and ``DRTOOL_BENCH_RETHINKDB_STANDBY=host:port``
are set (``DRTOOL_BENCH_USER`` / ``DRTOOL_BENCH_PASSWORD`` for both). Bytes are drtool's
estimate (drtool.compare.diff_ranges: payload sizes plus a fixed cost per query), the same for
both approaches and both modes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time

import common  # noqa: I001  (bench/common.py puts the checkout on sys.path)

from drtool.cluster import connect
from drtool.compare.diff import diff_table
from drtool.compare.diff_ranges import QUERY_OVERHEAD
from drtool.compare.reconcile import reconcile_table
from drtool.model import ClusterConfig, TableName
from drtool.reql.ordering import key_order

ENV_STANDBY = "DRTOOL_BENCH_RETHINKDB_STANDBY"
TARGETS = ("bytes <= 1% of the table's JSON", "time <= 3x one server-side digest",
           "identical tables: a handful of kilobytes")


def mutate(docs: list[str], fraction: float, seed: int):
    """Pick the differences: (changed texts, deleted keys, added texts)."""
    rng = random.Random(seed)
    n = max(3, int(len(docs) * fraction))
    chosen = rng.sample(docs, 2 * (n // 3))
    changed = [d.replace('"n":', '"n":-', 1) for d in chosen[: n // 3]]
    deleted = [common.key_text_of(d) for d in chosen[n // 3:]]
    added = common.make_docs(n - 2 * (n // 3), 470, seed + 99)
    return changed, deleted, added


async def naive(primary, standby, table) -> tuple[float, int, int]:
    """Every [key, hash] pair of both sides, merged in key order: (seconds, bytes, differences)."""
    t0 = time.perf_counter()

    async def pairs(cluster):
        out = []
        async for batch in cluster.hash_scan(table):
            out.extend(batch)
        return out

    a, b = await asyncio.gather(pairs(primary), pairs(standby))
    da, db = dict(a), dict(b)
    differing = len(da.keys() ^ db.keys()) + sum(da[k] != db[k] for k in da.keys() & db.keys())
    sorted(da.keys() ^ db.keys(), key=key_order)  # the client's share of the work
    seconds = time.perf_counter() - t0
    nbytes = 2 * QUERY_OVERHEAD + sum(  # each pair as the JSON row ["key text","hash"],
        len(json.dumps(pair, ensure_ascii=False, separators=(",", ":")).encode()) + 1
        for pair in a + b)
    return seconds, nbytes, differing


def standby_address() -> tuple[str, int] | None:
    value = os.environ.get(ENV_STANDBY, "").strip()
    host, _, port = value.rpartition(":")
    if value and (not host or not port.isdigit()):
        sys.exit(f"{ENV_STANDBY}={value!r}: expected host:port")
    return (host, int(port)) if value else None


async def clusters(docs: list[str]):
    """(mode, table, [primary, standby] clusters, real servers to clean up)."""
    table = TableName("bench", "diff")
    primary_addr, standby_addr = common.server_address(), standby_address()
    if primary_addr and standby_addr:
        servers = [common.RealServer(primary_addr), common.RealServer(standby_addr)]
        servers[1].prefix = servers[0].prefix
        table = TableName(servers[0].create_db(), "diff")
        servers[1].create_db()
        for server in servers:
            server.load(table.db, table.table, docs)
        user = os.environ.get(common.ENV_USER, "admin")
        password = os.environ.get(common.ENV_PASSWORD, "")
        pair = [await connect(ClusterConfig(role, (server.address,), user, password))
                for role, server in zip(("primary", "standby"), servers)]
        return (f"REAL SERVERS {servers[0].address} and {servers[1].address}", table, pair,
                servers)
    fakes = [common.fake_server(common.FAKE_HOST), common.fake_server(common.FAKE_TARGET_HOST)]
    for server, host in zip(fakes, (common.FAKE_HOST, common.FAKE_TARGET_HOST)):
        await common.fake_load(server, host, [table], lambda _: docs)
    pair = [common.fake_cluster(fakes[0], common.FAKE_HOST),
            common.fake_cluster(fakes[1], common.FAKE_TARGET_HOST, "standby")]
    return (f"FAKE (in-memory, times are Python's; set {common.ENV_SERVER} and {ENV_STANDBY} "
            "for real servers)", table, pair, [])


async def main() -> None:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--fraction", type=float, default=0.001,
                       help="share of documents changed, deleted or added on the standby")
    known, rest = extra.parse_known_args()
    fraction = known.fraction
    args = common.parse_args("drtool diff/reconcile vs the per-row hash stream", rest)
    docs = common.make_docs(args.docs, args.doc_size, args.seed)
    json_size = common.total_bytes(docs)
    mode, table, (primary, standby), servers = await clusters(docs)
    try:
        changed, deleted, added = mutate(docs, fraction, args.seed)
        await standby.insert_texts(table, changed + added, conflict="replace")
        await standby.delete_keys(table, deleted)
        await standby.sync(table)
        expected = len(changed) + len(deleted) + len(added)

        # The yardstick: one server-side digest of the table, both servers at once (what the
        # first step of a diff does). The fake runs both "servers" on one Python thread.
        t0 = time.perf_counter()
        await asyncio.gather(primary.range_digest(table), standby.range_digest(table))
        t_digest = time.perf_counter() - t0
        d = await diff_table(primary, standby, table)
        found = len(d.missing) + len(d.extra) + len(d.changed)
        assert (sorted(d.changed), sorted(d.missing), sorted(d.extra)) == (
            sorted(common.key_text_of(c) for c in changed), sorted(deleted),
            sorted(common.key_text_of(a) for a in added)), "diff result is wrong"
        n_seconds, n_bytes, n_found = await naive(primary, standby, table)
        assert n_found == expected
        t0 = time.perf_counter()
        rec = await reconcile_table(primary, standby, table)
        t_rec = time.perf_counter() - t0
        assert rec.equal_after
        same = await diff_table(primary, standby, table)
        assert same.equal

        print(f"== drtool diff: {args.docs:,} documents of ~{args.doc_size} bytes "
              f"({json_size / 1e6:.1f} MB of JSON), {expected} differences ({fraction:.2%})")
        print(f"   mode: {mode}")
        print(f"   machine: {common.describe_machine()}")
        print(f"   one server-side digest, both sides    {t_digest:8.2f} s")
        print(f"   drtool diff (digest search)           {d.seconds:8.2f} s  {d.traffic.bytes:>11,} bytes "
              f"({d.traffic.bytes / json_size:.3%} of the JSON, {d.traffic.queries} queries), "
              f"{found} keys found")
        print(f"   per-row hash stream (both sides)      {n_seconds:8.2f} s  {n_bytes:>11,} bytes "
              f"({n_bytes / json_size:.3%} of the JSON)")
        print(f"   reconcile (diff + writes + re-check)  {t_rec:8.2f} s  "
              f"{rec.before.traffic.bytes + rec.traffic.bytes:>11,} bytes")
        print(f"   diff of identical tables              {same.seconds:8.2f} s  {same.traffic.bytes:>11,} bytes")
        print(f"   ratio hash stream / digest search: {n_bytes / d.traffic.bytes:.1f}x bytes, "
              f"{n_seconds / d.seconds:.2f}x time; diff time = {d.seconds / t_digest:.2f}x one digest")
        print("   targets:")
        checks = (d.traffic.bytes <= 0.01 * json_size, d.seconds <= 3 * t_digest,
                  same.traffic.bytes <= 8192)
        for target, met in zip(TARGETS, checks):
            print(f"     [{'MET ' if met else 'MISS'}] {target}")
    finally:
        await primary.close()
        await standby.close()
        for s in servers:
            s.drop_all()


if __name__ == "__main__":
    asyncio.run(main())
