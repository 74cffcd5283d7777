"""Benchmark: snapshot and restore through s3:// (moto's S3 server on loopback) against file://.

    DRTOOL_BENCH_RETHINKDB=127.0.0.1:28015 python bench/s3.py [--docs 200000] [--doc-size 470]

Needs a real server (DRTOOL_BENCH_RETHINKDB) and moto[server]. It creates a database
``drtool_bench_<random>``, loads the generated table, starts ``python -m moto.server`` on a free
loopback port (its request log in a temporary file) and, for each of two rounds, into fresh
repositories: ``drtool snapshot`` into file:// then into s3://, and ``drtool restore latest
--rename`` from each into a new database (subprocesses; wall time and peak RSS; restore
digests checked). Requests per snapshot and per restore are counted from moto's request log
(one line per HTTP request). Prints the ratios and drops every bench database. A script, not a
test: nothing is asserted.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common as C  # noqa: E402

ROUNDS = 2
_REQUEST = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) ')


def requests_since(log: Path, offset: int) -> tuple[Counter, int]:
    """HTTP requests by method in moto's log after byte ``offset``, and the new offset."""
    text = log.read_text(errors="replace")
    return Counter(_REQUEST.findall(text[offset:])), len(text)


def fmt_requests(counts: Counter) -> str:
    return f"{sum(counts.values())} requests (" + ", ".join(
        f"{m} {n}" for m, n in sorted(counts.items())) + ")"


def real_bench(args, address: tuple[str, int]) -> C.Report:
    from tests.s3server import MotoServer, boto_client

    server = C.RealServer(address)
    report = C.Report(C.title("snapshot and restore, s3:// vs file://", args),
                      C.REAL_MODE.format(address=server.address) + "; s3:// = moto 5 server "
                      "on loopback")
    work = C.workdir()
    log_path = work / "moto.log"
    creds = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
             "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
             "AWS_EC2_METADATA_DISABLED": "true"}
    os.environ.update(creds)  # for this process's bucket creation too
    moto = None
    try:
        db, names, nbytes = server.setup(args, report)
        ndocs = args.docs * args.tables
        with open(log_path, "w") as log:
            moto = MotoServer(log=log).start()
        bucket = f"bench-{secrets.token_hex(4)}"
        boto_client(moto.endpoint).create_bucket(Bucket=bucket)
        table_args = [a for name in names for a in ("--table", f"{db}.{name}")]
        times: dict[str, list] = {k: [] for k in ("snap file", "snap s3", "rest file", "rest s3")}
        offset, snap_requests, restore_requests = 0, Counter(), Counter()
        for rnd in range(ROUNDS):
            policies = {}
            for kind in ("file", "s3"):
                d = work / f"{kind}{rnd}"
                d.mkdir()
                policy, env = C.write_policy(d, server.address)
                if kind == "s3":
                    text = policy.read_text().replace(
                        f'url = "file://{d / "repo"}"',
                        f'url = "s3://{bucket}/r{rnd}"\nendpoint = "{moto.endpoint}"')
                    policy.write_text(text)
                    C.drtool_cli(["-p", str(policy), "init"], {**env, **creds})
                policies[kind] = (policy, {**env, **creds})
            for kind in ("file", "s3"):
                policy, env = policies[kind]
                _, offset = requests_since(log_path, offset)
                run = C.measure_process(C.drtool_command(
                    ["-p", str(policy), "snapshot", *table_args, "-q", "--json"]),
                    env=env, what=f"drtool snapshot into {kind}://")
                if json.loads(run.stdout)["documents"] != ndocs:
                    raise SystemExit(f"snapshot into {kind}:// is incomplete")
                times[f"snap {kind}"].append(run)
                if kind == "s3":
                    snap_requests, offset = requests_since(log_path, offset)
            for kind in ("file", "s3"):
                policy, env = policies[kind]
                target = f"{db}_{kind}{rnd}"
                server.note_db(target)
                renames = [a for n in names for a in ("--rename", f"{db}.{n}={target}.{n}")]
                _, offset = requests_since(log_path, offset)
                run = C.measure_process(C.drtool_command(
                    ["-p", str(policy), "restore", "latest", *table_args, *renames, "-q",
                     "--json"]), env=env, what=f"drtool restore from {kind}://")
                bad = [t for t in json.loads(run.stdout)["tables"] if not t["digest_ok"]]
                if bad:
                    raise SystemExit(f"restore from {kind}://: digests differ: {bad}")
                times[f"rest {kind}"].append(run)
                if kind == "s3":
                    restore_requests, offset = requests_since(log_path, offset)
                server.r.db_drop(target).run(server.conn)
        best = {k: min(v, key=lambda m: m.seconds) for k, v in times.items()}
        rows = {
            "snap file": ("drtool snapshot into file://", ()),
            "snap s3": ("drtool snapshot into s3://", ("drtool snapshot into file://",)),
            "rest file": ("drtool restore from file://", ()),
            "rest s3": ("drtool restore from s3://", ("drtool restore from file://",)),
        }
        for key, (name, base) in rows.items():
            all_runs = ", ".join(f"{m.seconds:.2f}" for m in times[key])
            report.add(C.Row(name, best[key].seconds, ndocs, nbytes, baselines=base,
                             memory=f"{C.fmt_mb(max(m.maxrss for m in times[key]))} RSS",
                             note=f"best of {ROUNDS} (all: {all_runs} s), subprocess, fresh "
                                  "repository each round"))
        report.lines.append(f"requests per snapshot into s3:// (last round): "
                            f"{fmt_requests(snap_requests)}")
        report.lines.append(f"requests per restore from s3:// (last round): "
                            f"{fmt_requests(restore_requests)}")
        C.speed_check(report, "snapshot into s3:// within 1.3x of file://",
                      "drtool snapshot into s3://", "drtool snapshot into file://", within=1.3)
        C.speed_check(report, "restore from s3:// within 1.3x of file://",
                      "drtool restore from s3://", "drtool restore from file://", within=1.3)
        peak = max(m.maxrss for k in ("snap s3", "rest s3") for m in times[k])
        report.checks.append((f"peak RSS under {C.MEMORY_TARGET_MB:.0f} MB on s3://",
                              peak < C.MEMORY_TARGET_MB * C.MB, f"{C.fmt_mb(peak)}"))
    finally:
        if moto is not None:
            moto.stop()
        server.drop_all()
        C.remove(work)
    return report


async def fake_bench(args) -> C.Report:
    raise SystemExit(f"bench/s3.py needs a real server: set {C.ENV_SERVER}=host:port")


if __name__ == "__main__":
    C.run_bench(__doc__.splitlines()[0], fake_bench, real_bench)
