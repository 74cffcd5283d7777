"""Benchmark: `drtool snapshot` against an ordered to_json_string scan and rethinkdb-dump.

    python bench/snapshot.py [--docs 200000] [--doc-size 470] [--tables 1]
    DRTOOL_BENCH_RETHINKDB=127.0.0.1:28015 python bench/snapshot.py

With DRTOOL_BENCH_RETHINKDB set it creates a database ``drtool_bench_<random>`` on that server,
loads the generated tables, times (1) an ordered ``to_json_string`` scan with the driver,
(2) ``drtool -p POLICY snapshot --table ... -q --json`` as a subprocess into a file://
repository in a temporary directory, (3) a server-side fold digest of each table and (4) the
same drtool snapshot again (incremental, nothing changed), (5) ``python -m rethinkdb dump``;
prints the ratios and drops the database. Without it, it runs the same pipeline in-process against the in-memory
fake (see bench/common.py and docs/BENCHMARKS.md). A script, not a test: nothing is asserted.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402

SCAN = "ordered to_json_string scan"
DRTOOL = "drtool snapshot"
DUMP = "rethinkdb-dump"
DIGEST = "server-side fold digest of the table"
REPEAT = "drtool snapshot again, no writes since"


# --- fake --------------------------------------------------------------------------------
async def fake_bench(args) -> C.Report:
    from drtool.cluster import fake
    from drtool.snapshots.snapshot import SnapshotOptions, take_snapshot

    report = C.Report(C.title("snapshot", args), C.FAKE_MODE)
    ndocs = args.docs * args.tables
    work = C.workdir()
    try:
        server, tables, nbytes, fake_rss = await C.fake_source(args, C.FAKE_HOST)
        cluster = C.fake_cluster(server, C.FAKE_HOST)
        try:
            await C.fake_scan(cluster, tables)  # warm-up
            t0 = time.perf_counter()
            docs, _ = await C.fake_scan(cluster, tables)
            scan = report.add(C.Row(f"{SCAN} (fake)", time.perf_counter() - t0, docs, nbytes,
                                    note="the fake's own scan: slices of an in-memory list"))

            options = SnapshotOptions()
            repo = await C.new_repository(work / "timed")
            try:
                with C.RssSampler() as rss:
                    t0 = time.perf_counter()
                    manifest = await take_snapshot(repo, cluster, tables, policy_name="bench",
                                                   source="primary", options=options)
                    seconds = time.perf_counter() - t0
            finally:
                await repo.close()
            if manifest.doc_count != ndocs:
                raise SystemExit(f"snapshot has {manifest.doc_count} documents, expected {ndocs}")
            stored = C.repo_size(work / "timed" / "repo")
            row = report.add(C.Row(
                DRTOOL, seconds, manifest.doc_count, nbytes, baselines=(scan.operation,),
                memory=f"RSS +{C.fmt_mb(rss.growth)}",
                note=(f"take_snapshot into a file:// repository in a temp dir; includes the "
                      f"{options.settle} s changefeed settle per table "
                      f"(up to {options.table_concurrency} tables at a time); stored "
                      f"{C.fmt_mb(stored)} ({stored / nbytes:.2f} of the JSON)"),
            ))
            pipeline = seconds - options.settle * -(-args.tables // options.table_concurrency)
            report.lines.append(
                f"pipeline time without the settle: {pipeline:.2f} s = "
                f"{pipeline / ndocs * 1e6:.1f} us per document "
                f"({(pipeline - scan.seconds) / ndocs * 1e6:.1f} us beyond the fake's scan)")

            if not args.no_memory_pass:
                repo = await C.new_repository(work / "traced")
                try:
                    with C.traced() as traced_memory:
                        t0 = time.perf_counter()
                        await take_snapshot(repo, cluster, tables, policy_name="bench",
                                            source="primary", options=options)
                        traced_seconds = time.perf_counter() - t0
                        _, peak = traced_memory()
                finally:
                    await repo.close()
                row.memory += f"; drtool's own {C.fmt_mb(peak)} (tracemalloc)"
                report.lines.append(
                    f"memory pass (tracemalloc, {traced_seconds:.1f} s): peak of the Python "
                    f"allocations made during take_snapshot = {C.fmt_mb(peak)}; the fake's table "
                    f"({C.fmt_mb(fake_rss)} RSS) was loaded before tracing started and is not in it")
                memory_value = max(peak, rss.growth)
            else:
                memory_value = rss.growth
            report.lines.append(
                f"RSS +{C.fmt_mb(rss.growth)} = growth of this process's peak RSS during the timed "
                "take_snapshot over its RSS before (the fake's table excluded: it was already there)")
        finally:
            await cluster.close()
        report.lines.append(C.FAKE_NO_BASELINES)
        fake_checks(report, row, scan, ndocs, memory_value)
    finally:
        fake.unregister(C.FAKE_HOST)
        C.remove(work)
    return report


def fake_checks(report: C.Report, row: C.Row, scan: C.Row, ndocs: int, memory: int) -> None:
    """Targets are for a real server; on the fake only memory is comparable. For speed, show
    what drtool's own client-side work costs against the real scan of the reference figures."""
    ref_scan = C.REFERENCE[0][1] / 200_000 * ndocs  # 1.26 s per 200,000 ~470-byte documents
    own = row.seconds - scan.seconds
    report.lines.append(
        f"reference (shared/reql-facts.md): a real ordered to_json_string scan of {ndocs:,} "
        f"~470-byte documents takes ~{ref_scan:.2f} s; drtool's client work measured here is "
        f"{own:.2f} s. Within 1.3x needs the scan and this work to overlap, or this work to "
        f"stay under {0.3 * ref_scan:.2f} s if they ran one after the other.")
    report.checks.append((C.TARGETS[0], None, "needs a real server (fake mode)"))
    report.checks.append((C.TARGETS[1], None, "needs a real server (fake mode)"))
    report.checks.append((C.TARGETS[3], memory < C.MEMORY_TARGET_MB * C.MB,
                          f"drtool's own peak {C.fmt_mb(memory)} (the larger of RSS growth "
                          "and tracemalloc peak)"))


# --- real server -------------------------------------------------------------------------
def real_bench(args, address: tuple[str, int]) -> C.Report:
    server = C.RealServer(address)
    report = C.Report(C.title("snapshot", args), C.REAL_MODE.format(address=server.address))
    work = C.workdir()
    try:
        db, names, nbytes = server.setup(args, report)
        ndocs = args.docs * args.tables

        t0 = time.perf_counter()
        docs = 0
        for name in names:
            n, _ = server.scan_texts(db, name)
            docs += n
        scan = report.add(C.Row(f"{SCAN} (driver)", time.perf_counter() - t0, docs, nbytes,
                                note="one table after the other, in this process"))

        policy, env = C.write_policy(work, server.address)
        table_args = [a for name in names for a in ("--table", f"{db}.{name}")]

        def snapshot(what: str) -> tuple[C.Measured, dict]:
            run = C.measure_process(
                C.drtool_command(["-p", str(policy), "snapshot", *table_args, "-q", "--json"]),
                env=env, what=what)
            result = json.loads(run.stdout)
            if result["documents"] != ndocs:
                raise SystemExit(f"{what} has {result['documents']} documents, expected {ndocs}")
            return run, result

        run, result = snapshot("drtool snapshot")
        report.add(C.Row(DRTOOL, run.seconds, ndocs, nbytes, baselines=(scan.operation, DUMP),
                           memory=f"{C.fmt_mb(run.maxrss)} RSS",
                           note=f"subprocess, process start included; stored "
                                f"{C.fmt_mb(result['bytes_stored'])}"))

        t0 = time.perf_counter()
        for name in names:
            server.server_digest(db, name)
        report.add(C.Row(DIGEST, time.perf_counter() - t0, ndocs, nbytes,
                         note="fold('', r.uuid(acc + to_json_string())) in one query per table"))
        again, repeat = snapshot("drtool snapshot (repeat)")
        report.add(C.Row(REPEAT, again.seconds, ndocs, nbytes, baselines=(DIGEST,),
                         memory=f"{C.fmt_mb(again.maxrss)} RSS",
                         note=f"incremental: uploaded {C.fmt_mb(repeat['bytes_new'])}"))

        archive = work / "dump.tar.gz"
        run_dump = C.measure_process(
            C.rethinkdb_tool("dump", ["-e", db, "-f", str(archive)], server, work),
            what="rethinkdb dump")
        report.add(C.Row(DUMP, run_dump.seconds, ndocs, nbytes,
                         memory=f"{C.fmt_mb(run_dump.maxrss)} RSS (largest process)",
                         note=f"python -m rethinkdb dump -e {db}; archive "
                              f"{C.fmt_mb(archive.stat().st_size)}"))
        report.lines.append("peak memory: peak RSS of each subprocess alone (a wrapper reports "
                            "its one child's ru_maxrss)")
        C.speed_check(report, C.TARGETS[0], DRTOOL, scan.operation, within=1.3)
        C.speed_check(report, C.TARGETS[1], DRTOOL, DUMP, faster=5.0)
        C.speed_check(report, "repeat snapshot of an unchanged table about one server-side "
                      "digest (within 1.5x)", REPEAT, DIGEST, within=1.5)
        report.checks.append((C.TARGETS[3], run.maxrss < C.MEMORY_TARGET_MB * C.MB,
                              f"drtool's peak RSS {C.fmt_mb(run.maxrss)}"))
    finally:
        server.drop_all()
        C.remove(work)
    return report


if __name__ == "__main__":
    C.run_bench(__doc__.splitlines()[0], fake_bench, real_bench)
