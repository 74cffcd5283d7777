"""Benchmark: `drtool restore` against rethinkdb-restore of the same data.

    python bench/restore.py [--docs 200000] [--doc-size 470] [--tables 1]
    DRTOOL_BENCH_RETHINKDB=127.0.0.1:28015 python bench/restore.py

With DRTOOL_BENCH_RETHINKDB set it creates a database ``drtool_bench_<random>`` on that server,
loads the generated tables, takes a drtool snapshot and a ``rethinkdb dump`` of them (setup,
not timed), then times ``drtool restore latest --rename db.t=<db>_drtool.t ...`` (subprocess,
digests checked), the same texts loaded with ``insert(r.json(1,000 texts))`` on 4 connections
at once into ``<db>_ins`` (the write limit), and ``python -m rethinkdb restore --clients 8`` of
the dump renamed into ``<db>_rdb``; then changes 0.1% of the drtool-restored tables and times
``drtool restore --delta`` from the same snapshot (documents and bytes it moved against the full
restore's), and ``drtool import-dump`` of the dump; prints the ratios and drops every bench
database. Without it, it restores
in-process from a local repository into a second in-memory fake cluster (see bench/common.py
and docs/BENCHMARKS.md). A script, not a test: nothing is asserted.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402

DRTOOL = "drtool restore"
RDB_RESTORE = "rethinkdb-restore (8 clients)"
INSERT4 = "insert(r.json(1,000 texts)), soft, 4 connections"
RAW_INSERT = "insert_texts batches of 1000 (fake)"
DIGEST = "range digests of the table (fake)"
READ = "read segments: fetch+decrypt+decode"


# --- fake --------------------------------------------------------------------------------
async def fake_bench(args) -> C.Report:
    from drtool.cluster import fake
    from drtool.snapshots.restore import RestoreOptions, restore_snapshot
    from drtool.snapshots.segments import decode_segment
    from drtool.snapshots.snapshot import take_snapshot

    report = C.Report(C.title("restore", args), C.FAKE_MODE)
    ndocs = args.docs * args.tables
    work = C.workdir()
    hosts = [C.FAKE_HOST, C.FAKE_TARGET_HOST, "bench-fake-raw:28015", "bench-fake-traced:28015"]
    try:
        source, tables, nbytes, _ = await C.fake_source(args, hosts[0])
        cluster = C.fake_cluster(source, hosts[0])
        repo = await C.new_repository(work / "repo")
        try:
            t0 = time.perf_counter()
            manifest = await take_snapshot(repo, cluster, tables, policy_name="bench",
                                           source="primary")
        finally:
            await cluster.close()
        C.say(f"setup: snapshot taken in {time.perf_counter() - t0:.1f} s")

        # drtool's own read side: every segment fetched, authenticated, decrypted,
        # decompressed and split into texts, one after the other (no cluster involved).
        t0 = time.perf_counter()
        read = 0
        for entry in manifest.tables:
            for layer in entry.layers:
                for seg in layer.segments:
                    read += len(decode_segment(await repo.get_data(seg.id)))
        report.add(C.Row(READ, time.perf_counter() - t0, read, nbytes,
                         note="drtool's client-side work per document before the writes"))

        # Baseline: the fake's own write cost, the same texts in batches of 1000, one at a time.
        raw = C.fake_server(hosts[2])
        raw_cluster = C.fake_cluster(raw, hosts[2])
        texts = {t: source.texts(t) for t in tables}
        C.trim_heap()
        t0 = time.perf_counter()
        for table in tables:
            await raw_cluster.ensure_db(table.db)
            await raw_cluster.create_table(table, primary_key="id", shards=1, replicas=1)
            docs = texts[table]
            for start in range(0, len(docs), 1000):
                await raw_cluster.insert_texts(table, docs[start:start + 1000])
        raw_row = report.add(C.Row(RAW_INSERT, time.perf_counter() - t0, ndocs, nbytes,
                                   note="the fake's own write cost (it parses every document "
                                        "in Python); the floor for a restore into the fake"))
        t0 = time.perf_counter()
        for table in tables:
            await raw_cluster.range_digest(table)
        report.add(C.Row(DIGEST, time.perf_counter() - t0, ndocs, nbytes,
                         note="stands for the server-side digest check a restore ends with"))
        await raw_cluster.close()
        del texts, raw, raw_cluster
        fake.unregister(hosts[2])

        # drtool, timed.
        target = C.fake_server(hosts[1])
        target_cluster = C.fake_cluster(target, hosts[1])
        options = RestoreOptions()
        try:
            with C.RssSampler() as rss:
                t0 = time.perf_counter()
                reports = await restore_snapshot(repo, target_cluster, manifest, options)
                seconds = time.perf_counter() - t0
            C.trim_heap()
            retained = C.rss_bytes() - rss.start
        finally:
            await target_cluster.close()
        check_reports(reports, ndocs)
        row = report.add(C.Row(
            DRTOOL, seconds, ndocs, nbytes, baselines=(RAW_INSERT,),
            memory=f"RSS +{C.fmt_mb(rss.growth)} incl. the new table",
            note=(f"restore_snapshot from a file:// repository into a second fake, "
                  f"batches of {options.batch_size}, {options.batches_in_flight} in flight, "
                  "digests checked (all equal)"),
        ))
        overhead = row.seconds - raw_row.seconds - report.row(DIGEST).seconds
        report.lines.append(
            f"drtool's time beyond the fake's own work (its inserts and digests): "
            f"{overhead:+.2f} s ({overhead / ndocs * 1e6:+.1f} us per document); the fake's "
            f"Python insert ({raw_row.seconds / ndocs * 1e6:.0f} us per document) dominates, so "
            f"the restore speed on the fake says little about a real server")
        report.lines.append(
            f"RSS: peak +{C.fmt_mb(rss.growth)} during the restore, +{C.fmt_mb(retained)} kept "
            "afterwards (the restored table in the target fake); the difference, "
            f"{C.fmt_mb(rss.growth - retained)}, is a lower bound of drtool's own peak")
        own = rss.growth - retained
        del target
        fake.unregister(hosts[1])

        if not args.no_memory_pass:
            own = await traced_restore(repo, manifest, tables, hosts[3], options, ndocs, report)
            row.memory += f"; drtool's own ~{C.fmt_mb(own)} (tracemalloc)"
        await repo.close()
        report.lines.append(C.FAKE_NO_BASELINES)
        report.lines.append(
            f"reference (shared/reql-facts.md, real server): rethinkdb-restore of 200,000 "
            f"documents took {C.REFERENCE[2][1]} s and one connection of insert(r.json(...)) "
            f"batches {C.REFERENCE[3][1]} s; >= 3.5x faster than rethinkdb-restore means "
            f"<= {C.REFERENCE[2][1] / 3.5:.1f} s per 200,000 documents")
        report.checks.append((C.TARGETS[2], None, "needs a real server (fake mode)"))
        report.checks.append((C.TARGETS[3], own < C.MEMORY_TARGET_MB * C.MB,
                              f"drtool's own peak ~{C.fmt_mb(own)}"))
    finally:
        for host in hosts:
            fake.unregister(host)
        C.remove(work)
    return report


async def traced_restore(repo, manifest, tables, host, options, ndocs, report) -> int:
    """Restore again under tracemalloc into a fresh fake. The target fake's table grows during
    the restore, so drtool's own memory is sampled after every batch write as the traced total
    minus (bytes per stored document x documents written so far), the bytes per document being
    what the finished table keeps once drtool has released everything."""
    from drtool.cluster import fake
    from drtool.snapshots.restore import restore_snapshot

    server = C.fake_server(host)
    cluster = C.fake_cluster(server, host)
    samples: list[tuple[int, int]] = []  # (traced bytes, documents written)
    written = 0
    insert = cluster.insert_texts

    async def sampled_insert(table, docs, **kw):
        nonlocal written
        import tracemalloc
        samples.append((tracemalloc.get_traced_memory()[0], written))
        result = await insert(table, docs, **kw)
        written += len(docs)
        samples.append((tracemalloc.get_traced_memory()[0], written))
        return result

    cluster.insert_texts = sampled_insert  # type: ignore[method-assign]
    try:
        with C.traced() as traced_memory:
            t0 = time.perf_counter()
            reports = await restore_snapshot(repo, cluster, manifest, options)
            seconds = time.perf_counter() - t0
            C.trim_heap()
            kept, peak = traced_memory()
    finally:
        await cluster.close()
        fake.unregister(host)
    check_reports(reports, ndocs)
    per_doc = kept / ndocs
    own = max(0, max(total - per_doc * n for total, n in samples))
    report.lines.append(
        f"memory pass (tracemalloc, {seconds:.1f} s): traced peak {C.fmt_mb(peak)} including "
        f"the target fake's new table, which keeps {C.fmt_mb(kept)} ({per_doc:.0f} B/document) "
        f"at the end; drtool's own, sampled around each of {len(samples) // 2} batch writes as "
        f"traced - {per_doc:.0f} B x documents written: {C.fmt_mb(own)}")
    return int(own)


def check_reports(reports, ndocs: int) -> None:
    if sum(r.written.written for r in reports) != ndocs or not all(r.digest_ok for r in reports):
        raise SystemExit(f"restore incomplete or digests differ: {reports}")


# --- real server -------------------------------------------------------------------------
def real_bench(args, address: tuple[str, int]) -> C.Report:
    server = C.RealServer(address)
    report = C.Report(C.title("restore", args), C.REAL_MODE.format(address=server.address))
    work = C.workdir()
    try:
        db, names, nbytes = server.setup(args, report)
        ndocs = args.docs * args.tables

        # Setup, not timed: a drtool snapshot and a rethinkdb dump of the same tables.
        policy, env = C.write_policy(work, server.address)
        table_args = [a for name in names for a in ("--table", f"{db}.{name}")]
        C.drtool_cli(["-p", str(policy), "snapshot", *table_args, "-q", "--json"], env)
        archive = work / "dump.tar.gz"
        C.measure_process(C.rethinkdb_tool("dump", ["-e", db, "-f", str(archive)], server, work),
                          what="rethinkdb dump")
        rdb_db, drtool_db = db + "_rdb", db + "_drtool"
        renamed = work / "dump-renamed.tar.gz"
        C.rename_dump(archive, renamed, {(db, n): (rdb_db, n) for n in names})
        server.note_db(rdb_db)
        server.note_db(drtool_db)

        renames = [a for n in names for a in ("--rename", f"{db}.{n}={drtool_db}.{n}")]
        run = C.measure_process(
            C.drtool_command(["-p", str(policy), "restore", "latest", *table_args, *renames,
                              "-q", "--json"]),
            env=env, what="drtool restore")
        result = json.loads(run.stdout)
        bad = [t for t in result["tables"] if not t["digest_ok"] or t["written"] != args.docs]
        if bad:
            raise SystemExit(f"drtool restore: incomplete or digests differ: {bad}")
        report.add(C.Row(DRTOOL, run.seconds, ndocs, nbytes, baselines=(INSERT4, RDB_RESTORE),
                         memory=f"{C.fmt_mb(run.maxrss)} RSS",
                         note="subprocess, process start and the digest check included"))

        # The write limit: the best hand-written load of the same texts (reql-facts.md:
        # 4 connections in parallel beat 1 and 8), into <db>_ins.
        ins_db = server.create_db("_ins")
        seconds = 0.0
        for i, n in enumerate(names):
            seconds += server.parallel_insert(ins_db, n, C.make_docs(args.docs, args.doc_size,
                                                                     args.seed, i))
        report.add(C.Row(INSERT4, seconds, ndocs, nbytes,
                         note=f"the same texts into {ins_db} with the driver, 4 threads each "
                              "with its own connection, then sync (the write limit)"))

        delta_restore(report, server, policy, env, table_args, renames, drtool_db, names,
                      args, ndocs, nbytes)

        run_rdb = C.measure_process(
            C.rethinkdb_tool("restore", [str(renamed), "--clients", "8", "--force"], server, work),
            what="rethinkdb restore")
        report.add(C.Row(RDB_RESTORE, run_rdb.seconds, ndocs, nbytes,
                         memory=f"{C.fmt_mb(run_rdb.maxrss)} RSS (largest process)",
                         note=f"python -m rethinkdb restore of the dump renamed to {rdb_db}"))
        for n in names:
            for target in (drtool_db, rdb_db, ins_db):
                count = server.count(target, n)
                if count != args.docs:
                    raise SystemExit(f"{target}.{n} has {count} documents, expected {args.docs}")
        import_dump(report, policy, env, archive, ndocs, nbytes)
        report.lines.append("peak memory: peak RSS of each subprocess alone (a wrapper reports "
                            "its one child's ru_maxrss)")
        C.speed_check(report, "restore within 1.2x of the 4-connection insert", DRTOOL, INSERT4,
                      within=1.2)
        C.speed_check(report, C.TARGETS[2], DRTOOL, RDB_RESTORE, faster=3.5)
        report.checks.append((C.TARGETS[3], run.maxrss < C.MEMORY_TARGET_MB * C.MB,
                              f"drtool's peak RSS {C.fmt_mb(run.maxrss)}"))
    finally:
        server.drop_all()
        C.remove(work)
    return report


DELTA = "drtool restore --delta (0.1% changed)"
DELTA_TARGET = "restore --delta moves under 1% of a full restore's documents and bytes"


def damage(server, db: str, table: str, count: int, seed: int) -> int:
    """Change ``count`` documents of ``db.table`` with the driver: a third updated, a third
    deleted, a third inserted under new keys. Returns the documents changed."""
    r = server.r
    tbl = r.db(db).table(table)
    keys = tbl.sample(count - count // 3)["id"].run(server.conn)
    updated, deleted = keys[: count // 3], keys[count // 3:]
    res = tbl.get_all(r.args(updated)).update({"damaged": seed}).run(server.conn)
    assert res["replaced"] == len(updated), res
    res = tbl.get_all(r.args(deleted)).delete().run(server.conn)
    assert res["deleted"] == len(deleted), res
    new = [{"id": f"new-{seed}-{i}", "n": i} for i in range(count // 3)]
    res = tbl.insert(new).run(server.conn)
    assert res["inserted"] == len(new), res
    return len(updated) + len(deleted) + len(new)


def delta_restore(report, server, policy, env, table_args, renames, target_db, names, args,
                  ndocs: int, nbytes: int) -> None:
    """Change 0.1% of the tables drtool just restored, then time ``restore --delta`` from the
    same snapshot; report what it moved against the full restore (documents written and
    bytes: texts sent plus every digest and hash query's traffic)."""
    changed = sum(damage(server, target_db, n, max(3, args.docs // 1000), args.seed)
                  for n in names)
    run = C.measure_process(
        C.drtool_command(["-p", str(policy), "restore", "latest", "--delta", *table_args,
                          *renames, "-q", "--json"]), env=env, what="drtool restore --delta")
    tables = json.loads(run.stdout)["tables"]
    if not all(t["digest_ok"] for t in tables):
        raise SystemExit(f"drtool restore --delta: digests differ afterwards: {tables}")
    docs = sum(t["written_count"] + t["deleted_count"] for t in tables)
    sent = sum(t["bytes_written"] for t in tables)
    traffic = sum(t["traffic"]["bytes"] for t in tables)
    report.add(C.Row(DELTA, run.seconds, docs, sent + traffic, baselines=(DRTOOL,),
                     memory=f"{C.fmt_mb(run.maxrss)} RSS",
                     note=f"{changed} documents changed (updated, deleted, new) in "
                          f"{target_db} after the full restore; digests equal afterwards"))
    ranges = sum(t["ranges"] for t in tables)
    touched = sum(t["ranges_changed"] for t in tables)
    report.lines.append(
        f"restore --delta: {docs:,} documents written or deleted = {docs / ndocs:.3%} of the "
        f"full restore's {ndocs:,}; {C.fmt_mb(sent + traffic)} moved ({C.fmt_mb(sent)} of "
        f"documents + {C.fmt_mb(traffic)} of digest/hash queries) = "
        f"{(sent + traffic) / nbytes:.3%} of the full restore's {C.fmt_mb(nbytes)}; "
        f"{touched} of {ranges} recorded ranges differed")
    ok = docs < 0.01 * ndocs and sent + traffic < 0.01 * nbytes
    report.checks.append((DELTA_TARGET, ok, f"{docs / ndocs:.3%} of the documents, "
                                            f"{(sent + traffic) / nbytes:.3%} of the bytes"))


IMPORT = "drtool import-dump of the rethinkdb dump"


def import_dump(report, policy, env, archive, ndocs: int, nbytes: int) -> None:
    """Time ``drtool import-dump`` of the setup's ``rethinkdb dump`` archive of the same tables
    the drtool snapshot holds, and the bytes it stored that the snapshot had not (bytes_new)."""
    run = C.measure_process(C.drtool_command(["-p", str(policy), "import-dump", str(archive),
                                              "-q", "--json"]), env=env, what="drtool import-dump")
    result = json.loads(run.stdout)
    if result["documents"] != ndocs:
        raise SystemExit(f"drtool import-dump: {result['documents']} documents, expected {ndocs}")
    report.add(C.Row(IMPORT, run.seconds, ndocs, nbytes, baselines=(RDB_RESTORE,),
                     memory=f"{C.fmt_mb(run.maxrss)} RSS",
                     note=f"archive read twice, canonicalised client-side; {result['bytes_new']:,} "
                          "bytes new (stored by the import, not by the snapshot of the same "
                          "tables)"))


if __name__ == "__main__":
    C.run_bench(__doc__.splitlines()[0], fake_bench, real_bench)
