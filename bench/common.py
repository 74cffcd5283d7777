"""Shared helpers of the benches (bench/snapshot.py, bench/restore.py).

Two modes:

* **real server** when ``DRTOOL_BENCH_RETHINKDB=host:port`` is set: the data is loaded into a
  fresh database ``drtool_bench_<random>`` with the official driver, drtool runs as a
  subprocess (``python -m drtool``) with a generated policy, and the baselines are an ordered
  ``to_json_string`` scan with the driver and ``rethinkdb dump``/``restore`` from the driver
  package. Every bench database is dropped afterwards. ``DRTOOL_BENCH_PASSWORD`` (optional)
  is the password of the user ``DRTOOL_BENCH_USER`` (default ``admin``).
* **fake** otherwise: the in-memory fake cluster (``drtool.cluster.fake``) and drtool's
  pipeline run in this process. This measures our own pipeline only; the baselines are the
  fake's own scan and the fake's own insert, and rethinkdb dump/restore are not run.

The module imports ``rethinkdb`` only inside the real-server helpers. It is not part of
drtool and is never imported by the tests.
"""

from __future__ import annotations

import argparse
import base64
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` from a checkout without `pip install .`
    sys.path.insert(0, str(ROOT))

ENV_SERVER = "DRTOOL_BENCH_RETHINKDB"
ENV_USER = "DRTOOL_BENCH_USER"
ENV_PASSWORD = "DRTOOL_BENCH_PASSWORD"
FAKE_HOST = "bench-fake-primary:28015"  # cannot be a real host name: the fake serves it
FAKE_TARGET_HOST = "bench-fake-target:28015"
MB = 1e6
MEMORY_TARGET_MB = 200.0

# Targets on a real server (issue 3); reference figures from shared/reql-facts.md
# (RethinkDB 2.4.4, 200,000 documents of ~470 bytes, 2 cores, loopback).
TARGETS = (
    "snapshot within 1.3x of the ordered to_json_string scan",
    "snapshot >= 5x faster than rethinkdb-dump",
    "restore >= 3.5x faster than rethinkdb-restore",
    f"peak memory under {MEMORY_TARGET_MB:.0f} MB whatever the table size",
)
REFERENCE = (
    ("ordered scan of to_json_string() texts", 1.26),
    ("rethinkdb-dump (tar.gz, 58.4 MB)", 7.65),
    ("rethinkdb-restore (8 clients)", 26.4),
    ("one connection, insert(r.json(1,000 texts)) batches, soft", 7.5),
)


# --- arguments ------------------------------------------------------------------------------
def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--docs", type=int, default=200_000, help="documents per table (default 200000)")
    p.add_argument("--doc-size", type=int, default=470,
                   help="approximate bytes of canonical JSON per document (default 470)")
    p.add_argument("--tables", type=int, default=1, help="tables (default 1)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the generated data")
    p.add_argument("--no-memory-pass", action="store_true",
                   help="fake mode: skip the second, tracemalloc-instrumented run of drtool")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = p.parse_args(argv)
    if args.docs < 1 or args.tables < 1 or args.doc_size < 200:
        p.error("--docs and --tables must be >= 1, --doc-size >= 200")
    return args


def run_bench(description: str, fake_bench: Callable, real_bench: Callable) -> None:
    """Parse the flags, run the fake or the real-server bench, print its report."""
    args = parse_args(description)
    address = server_address()
    if address is None:
        report = asyncio.run(fake_bench(args))
    else:
        report = real_bench(args, address)
    report.print(args.json)


def title(verb: str, args: argparse.Namespace) -> str:
    return (f"{verb}: {args.tables} table(s) x {args.docs:,} documents of "
            f"~{args.doc_size} bytes")


def server_address() -> tuple[str, int] | None:
    value = os.environ.get(ENV_SERVER, "").strip()
    if not value:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        sys.exit(f"{ENV_SERVER}={value!r}: expected host:port")
    return host, int(port)


def describe_machine() -> str:
    return (f"{os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))}), "
            f"Python {sys.version.split()[0]}, {sys.platform}")


# --- generated documents ------------------------------------------------------------------
_WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike "
          "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee "
          "zulu order invoice customer shipment warehouse pending paid refunded express "
          "standard priority review note street avenue city region").split()


def _note(rng: random.Random, size: int) -> str:
    """``size`` ASCII characters: a few words, then random base64 (no JSON escapes). Random per
    document, so that the data compresses about as much as the reference data did (gzip 0.62
    of the JSON size in rethinkdb-dump), not better."""
    words = " ".join(rng.choices(_WORDS, k=max(1, size // 120)))
    noise = base64.b64encode(rng.randbytes(size * 3 // 4 + 3)).decode()
    return (words + " " + noise)[:size]


def make_docs(n: int, doc_size: int, seed: int, table_index: int = 0) -> list[str]:
    """``n`` canonical JSON texts (sorted keys, compact, raw UTF-8) of about ``doc_size`` UTF-8
    bytes, with random UUID primary keys, a TIME, nested objects, arrays, non-ASCII text."""
    rng = random.Random(seed * 1000 + table_index)
    docs = []
    for i in range(n):
        key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        head = (
            f'{{"active":{"true" if i % 3 else "false"},'
            f'"address":{{"city":"Zürich","street":"Bahnhofstraße {i % 977}","zip":"{8000 + i % 99}"}},'
            f'"at":{{"$reql_type$":"TIME","epoch_time":{1700000000 + i},"timezone":"+00:00"}},'
            f'"email":"user{i}@example.com","id":"{key}","n":{i},"name":"Zoë ключ {i}",'
            f'"note":"'
        )
        tail = f'","score":{i % 1000}.25,"tags":["t{i % 7}","t{i % 11}"]}}'
        pad = max(doc_size - len(head.encode()) - len(tail), 0)
        docs.append(head + _note(rng, pad) + tail)
    return docs


def check_canonical(docs: list[str], sample: int = 200) -> None:
    """Fail loudly if the generator stops producing the server's canonical form."""
    from drtool.reql import canonical
    for text in docs[:: max(1, len(docs) // sample)]:
        if canonical.dumps(canonical.parse(text)) != text:
            raise AssertionError(f"generated document is not canonical: {text[:120]}")


def key_text_of(doc: str) -> str:
    """The primary key text of a generated document (``"id":"<uuid>"``)."""
    i = doc.index('"id":') + 5
    return doc[i:i + 38]


def total_bytes(docs: list[str]) -> int:
    return sum(len(d.encode()) + 1 for d in docs)  # + newline, as in a segment


# --- memory ---------------------------------------------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def trim_heap() -> None:
    """Collect garbage and give free heap pages back to the OS, so that RSS growth measured
    from here on is new memory, not reuse of memory freed earlier. Objects alive now (the
    fakes' tables) are frozen out of the garbage collector: in production the table lives in
    the server, and collections walking millions of fake rows would be timed as drtool's."""
    gc.collect()
    gc.freeze()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class RssSampler:
    """Peak RSS of this process while the ``with`` block runs (a thread samples every 5 ms;
    the kernel's high-water mark is reset first where /proc/self/clear_refs allows it)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.start = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "RssSampler":
        trim_heap()
        self.start = self.peak = rss_bytes()
        with contextlib.suppress(OSError):
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(), self._hwm())

    def _hwm(self) -> int:
        with contextlib.suppress(OSError, ValueError):
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        return 0

    @property
    def growth(self) -> int:
        return self.peak - self.start


@contextlib.contextmanager
def traced() -> Iterator[Callable[[], tuple[int, int]]]:
    """tracemalloc over the block; yields ``get_traced_memory``. Only allocations made inside
    the block are counted (the fake's table, loaded before, is not)."""
    trim_heap()
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        yield tracemalloc.get_traced_memory
    finally:
        tracemalloc.stop()


# --- results --------------------------------------------------------------------------------
@dataclass
class Row:
    operation: str
    seconds: float
    docs: int
    nbytes: int
    baselines: tuple[str, ...] = ()  # operations this row is compared with
    memory: str = ""  # peak memory, already formatted
    note: str = ""

    @property
    def docs_per_s(self) -> float:
        return self.docs / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / MB / self.seconds if self.seconds else 0.0


@dataclass
class Report:
    title: str
    mode: str
    rows: list[Row] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # printed after the table
    checks: list[tuple[str, bool | None, str]] = field(default_factory=list)  # target, met?, how

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.operation == name), None)

    def ratio(self, row: Row) -> str:
        """``1.20x of scan`` (slower or equal) or ``5.1x faster than dump``, per baseline."""
        out = []
        for name in row.baselines:
            base = self.row(name)
            if base is None or not base.seconds or not row.seconds:
                continue
            q = row.seconds / base.seconds
            out.append(f"{q:.2f}x the time of {name}" if q >= 1 else f"{1 / q:.2f}x faster than {name}")
        return "; ".join(out)

    def print(self, as_json: bool = False) -> None:
        print()
        print(f"== {self.title}")
        print(f"   mode: {self.mode}")
        print(f"   machine: {describe_machine()}")
        header = ("operation", "seconds", "docs/s", "MB/s", "ratio vs baseline", "peak memory")
        table = [header] + [
            (r.operation, f"{r.seconds:.2f}", f"{r.docs_per_s:,.0f}", f"{r.mb_per_s:.1f}",
             self.ratio(r), r.memory) for r in self.rows
        ]
        widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
        for j, line in enumerate(table):
            print("   " + "  ".join(str(c).ljust(w) if i in (0, 4, 5) else str(c).rjust(w)
                                    for i, (c, w) in enumerate(zip(line, widths))).rstrip())
            if j == 0:
                print("   " + "  ".join("-" * w for w in widths))
        for r in self.rows:
            if r.note:
                print(f"   * {r.operation}: {r.note}")
        for line in self.lines:
            print(f"   {line}")
        if self.checks:
            print("   targets:")
            for target, met, how in self.checks:
                mark = "n/a " if met is None else ("MET " if met else "MISS")
                print(f"     [{mark}] {target}: {how}")
        if as_json:
            print(json.dumps({
                "title": self.title, "mode": self.mode, "machine": describe_machine(),
                "rows": [{"operation": r.operation, "seconds": round(r.seconds, 4), "docs": r.docs,
                          "bytes": r.nbytes, "baselines": list(r.baselines),
                          "ratio": self.ratio(r), "peak_memory": r.memory,
                          "note": r.note} for r in self.rows],
                "checks": [{"target": t, "met": m, "how": h} for t, m, h in self.checks],
            }, indent=2))


def fmt_mb(nbytes: float) -> str:
    return f"{nbytes / MB:.1f} MB"


def speed_check(report: Report, target: str, row: str, base: str, *, within: float | None = None,
                faster: float | None = None) -> None:
    """Record whether ``row`` is within ``within`` x of ``base`` / ``faster`` x faster."""
    r, b = report.row(row), report.row(base)
    if r is None or b is None:
        report.checks.append((target, None, "not measured in this mode"))
        return
    ratio = r.seconds / b.seconds
    if within is not None:
        report.checks.append((target, ratio <= within, f"{ratio:.2f}x of {base}"))
    else:
        assert faster is not None
        speedup = b.seconds / r.seconds
        report.checks.append((target, speedup >= faster, f"{speedup:.2f}x faster than {base}"))


def say(message: str) -> None:
    """Progress of the bench, on stdout before the report."""
    print(message, flush=True)


# --- fake mode ------------------------------------------------------------------------------
FAKE_MODE = ("FAKE (in-memory fake cluster, drtool's pipeline in this process; "
             f"set {ENV_SERVER}=host:port for a real server)")
FAKE_NO_BASELINES = ("rethinkdb-dump / rethinkdb-restore: not available without a server "
                     f"(set {ENV_SERVER}=host:port); not run")


def bench_tables(n: int, db: str = "bench") -> list:
    from drtool.model import TableName

    return [TableName(db, f"t{i}") for i in range(n)]


def fake_server(host: str):
    from drtool.cluster import fake

    server = fake.FakeServer()
    fake.register(host, server)
    return server


def fake_cluster(server, host: str, role: str = "primary"):
    from drtool.model import ClusterConfig

    return server.connect(ClusterConfig(role=role, hosts=(host,)))


async def fake_load(server, host: str, tables: list, docs_of: Callable[[int], list[str]]) -> int:
    """Create the tables on a fake server and store the generated texts directly in its store
    (the fake's ``insert_texts`` parses every document in Python, which would only slow the
    setup down; a sample is checked to be canonical first). Returns the total bytes."""
    from drtool.reql.ordering import key_order

    cluster = fake_cluster(server, host)
    nbytes = 0
    try:
        for i, table in enumerate(tables):
            await cluster.ensure_db(table.db)
            await cluster.create_table(table, primary_key="id", shards=1, replicas=1)
            docs = docs_of(i)
            check_canonical(docs)
            store = server.table_obj(table)
            for doc in docs:
                key = key_text_of(doc)
                store.docs[key_order(key)] = (key, doc)
            store.order()  # sort once now rather than inside the first timed scan
            nbytes += total_bytes(docs)
    finally:
        await cluster.close()
    return nbytes


async def fake_source(args: argparse.Namespace, host: str):
    """A fake server registered as ``host`` holding the generated tables.

    Returns (server, tables, bytes of JSON, RSS the fake's tables take)."""
    server = fake_server(host)
    tables = bench_tables(args.tables)
    trim_heap()
    before = rss_bytes()
    t0 = time.perf_counter()
    nbytes = await fake_load(server, host, tables,
                             lambda i: make_docs(args.docs, args.doc_size, args.seed, i))
    trim_heap()
    held = rss_bytes() - before
    say(f"generated and loaded {args.docs * args.tables:,} documents ({fmt_mb(nbytes)} of JSON) "
        f"into the fake in {time.perf_counter() - t0:.1f} s; the fake holds them in "
        f"{fmt_mb(held)} of RSS")
    return server, tables, nbytes, held


async def fake_scan(cluster, tables: list, batch_size: int = 1000) -> tuple[int, int]:
    """The baseline: read every table in key order, as texts, like drtool's scan does."""
    docs = nbytes = 0
    for table in tables:
        async for rows in cluster.scan(table, batch_size=batch_size):
            docs += len(rows)
            nbytes += sum(len(d) for _, d in rows)
    return docs, nbytes


async def new_repository(directory: Path):
    """A fresh file:// repository in ``directory`` with a new identity; returns it open."""
    from drtool.repo.identity import keygen
    from drtool.repo.repository import KeySources, Repository
    from drtool.storage.local import LocalStorage

    directory.mkdir(parents=True)
    identity = directory.parent / f"{directory.name}-identity.txt"
    keygen(identity)
    (directory / "repo").mkdir()
    return await Repository.create(LocalStorage(directory / "repo"), KeySources(identity_file=identity))


def repo_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


# --- real-server mode -----------------------------------------------------------------------
REAL_MODE = "REAL SERVER at {address} (drtool as a subprocess, baselines from the driver package)"

# Runs a command, then writes {"seconds", "maxrss_kb", "rc"} of that one child to a file: the
# RUSAGE_CHILDREN of this wrapper covers only its own child, whatever ran before in the bench.
_WRAPPER = r"""
import json, resource, subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
rc = subprocess.call(cmd)
seconds = time.perf_counter() - t0
with open(out, "w") as f:
    json.dump({"seconds": seconds, "rc": rc,
               "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}, f)
sys.exit(rc)
"""


@dataclass
class Measured:
    seconds: float
    maxrss: int  # bytes
    stdout: str


def measure_process(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
                    what: str = "") -> Measured:
    """Run ``cmd`` through the wrapper; its own wall time and peak RSS. Exits on failure."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        proc = subprocess.run([sys.executable, "-c", _WRAPPER, out.name, *cmd], env=env,
                              cwd=cwd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout + proc.stderr)
            raise SystemExit(f"{what or cmd[0]} failed with exit code {proc.returncode}")
        info = json.load(out)
    return Measured(info["seconds"], info["maxrss_kb"] * 1024, proc.stdout)


def real_driver():
    """A synchronous driver instance (imported only here)."""
    from rethinkdb import RethinkDB

    return RethinkDB()


class RealServer:
    """The bench's own database on a real server: load, scan, count, drop."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.host, self.port = address
        self.user = os.environ.get(ENV_USER, "admin")
        self.password = os.environ.get(ENV_PASSWORD, "")
        self.r = real_driver()
        self.conn = self.r.connect(host=self.host, port=self.port, user=self.user,
                                   password=self.password, timeout=20)
        self.prefix = f"drtool_bench_{secrets.token_hex(4)}"
        self.dbs: set[str] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def create_db(self, suffix: str = "") -> str:
        name = self.prefix + suffix
        self.r.db_create(name).run(self.conn)
        self.dbs.add(name)
        return name

    def note_db(self, name: str) -> None:
        """A database created by someone else (drtool, rethinkdb-restore): drop it at the end."""
        self.dbs.add(name)

    def load(self, db: str, table: str, docs: list[str], batch: int = 1000) -> float:
        """Create ``db.table`` and insert the texts with ``insert(r.json(...))``; returns
        the seconds it took. Checks every batch's result (errors come back in it)."""
        r = self.r
        r.db(db).table_create(table, primary_key="id").run(self.conn)
        t0 = time.perf_counter()
        for start in range(0, len(docs), batch):
            chunk = docs[start:start + batch]
            res = r.db(db).table(table).insert(
                r.json("[" + ",".join(chunk) + "]"), durability="soft"
            ).run(self.conn)
            if res.get("errors") or res.get("inserted") != len(chunk):
                raise SystemExit(f"loading {db}.{table}: {res.get('first_error') or res}")
        r.db(db).table(table).sync().run(self.conn)
        return time.perf_counter() - t0

    def parallel_insert(self, db: str, table: str, docs: list[str], connections: int = 4,
                        batch: int = 1000) -> float:
        """The best hand-written load (shared/reql-facts.md): ``insert(r.json(1,000 texts),
        durability='soft')`` batches on ``connections`` connections at once (threads of the
        synchronous driver), then ``sync``. Creates ``db.table``; returns the seconds from
        the first insert to the end of the sync. Checks every batch's result."""
        r = self.r
        r.db(db).table_create(table, primary_key="id").run(self.conn)
        batches = [docs[i:i + batch] for i in range(0, len(docs), batch)]
        conns = [r.connect(host=self.host, port=self.port, user=self.user,
                           password=self.password, timeout=20) for _ in range(connections)]
        errors: list[str] = []

        def load(k: int) -> None:
            for chunk in batches[k::connections]:
                res = r.db(db).table(table).insert(
                    r.json("[" + ",".join(chunk) + "]"), durability="soft").run(conns[k])
                if res.get("errors") or res.get("inserted") != len(chunk):
                    errors.append(str(res.get("first_error") or res))
                    return

        try:
            threads = [threading.Thread(target=load, args=(k,)) for k in range(connections)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            r.db(db).table(table).sync().run(self.conn)
            seconds = time.perf_counter() - t0
        finally:
            for c in conns:
                c.close()
        if errors:
            raise SystemExit(f"loading {db}.{table}: {errors[0]}")
        return seconds

    def server_digest(self, db: str, table: str) -> str:
        """The server-side fold digest of a whole table (one query, 36 bytes back)."""
        r = self.r
        return r.db(db).table(table).order_by(index="id").fold(
            "", lambda acc, d: r.uuid(acc.add(d.to_json_string()))).run(self.conn)

    def scan_texts(self, db: str, table: str) -> tuple[int, int]:
        """The baseline: ordered scan of ``to_json_string()`` texts, read with the driver."""
        r = self.r
        docs = nbytes = 0
        cursor = (r.db(db).table(table).order_by(index="id")
                  .map(lambda d: d.to_json_string()).run(self.conn))
        try:
            for text in cursor:
                docs += 1
                nbytes += len(text.encode()) + 1
        finally:
            cursor.close()
        return docs, nbytes

    def setup(self, args: argparse.Namespace, report: Report) -> tuple[str, list[str], int]:
        """Create the bench database and load the generated tables into it; add the load
        as a row. Returns the database, the table names and the bytes of JSON."""
        db = self.create_db()
        names = [f"t{i}" for i in range(args.tables)]
        nbytes = 0
        seconds = 0.0
        for i, name in enumerate(names):
            docs = make_docs(args.docs, args.doc_size, args.seed, i)
            nbytes += total_bytes(docs)
            seconds += self.load(db, name, docs)
            del docs
        report.add(Row("load: insert(r.json(1,000 texts)), soft, 1 connection", seconds,
                       args.docs * args.tables, nbytes,
                       note="setup, for comparison with the reference figures"))
        return db, names, nbytes

    def count(self, db: str, table: str) -> int:
        return self.r.db(db).table(table).count().run(self.conn)

    def drop_all(self) -> None:
        existing = set(self.r.db_list().run(self.conn))
        for name in sorted(self.dbs & existing):
            self.r.db_drop(name).run(self.conn)
        self.conn.close()


def write_policy(workdir: Path, address: str) -> tuple[Path, dict[str, str]]:
    """A policy (primary = the bench server, file:// repository in ``workdir``) and an identity
    made with ``drtool keygen``; the repository is initialised with ``drtool init``. Returns
    the policy path and the environment to run drtool with."""
    env = dict(os.environ)
    env.pop("DRTOOL_POLICY", None)
    identity = workdir / "identity.txt"
    lines = [
        'name = "bench"',
        "[primary]",
        f'hosts = ["{address}"]',
        f'user = "{os.environ.get(ENV_USER, "admin")}"',
    ]
    if os.environ.get(ENV_PASSWORD):
        lines.append(f'password_env = "{ENV_PASSWORD}"')
    lines += [
        "[repository]", f'url = "file://{workdir / "repo"}"',
        "[encryption]", f'identity_file = "{identity}"',
    ]
    policy = workdir / "policy.toml"
    policy.write_text("\n".join(lines) + "\n")
    drtool_cli(["keygen", "--out", str(identity)], env)
    drtool_cli(["-p", str(policy), "init"], env)
    return policy, env


_COMPILED = False


def drtool_command(args: list[str]) -> list[str]:
    """``python -m drtool ARGS`` from this checkout. Its modules are byte-compiled first (once),
    as ``pip install`` does: otherwise, where PYTHONDONTWRITEBYTECODE is set, every run would
    include compiling drtool's sources (~0.1-0.2 s)."""
    global _COMPILED
    if not _COMPILED:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "drtool")],
                       check=True, capture_output=True)
        _COMPILED = True
    return [sys.executable, "-m", "drtool", *args]


def drtool_cli(args: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(drtool_command(args), env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"drtool {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def rethinkdb_tool(verb: str, args: list[str], server: RealServer, workdir: Path) -> list[str]:
    """``python -m rethinkdb dump|restore`` (the driver package's rethinkdb-dump/-restore)."""
    cmd = [sys.executable, "-m", "rethinkdb", verb, "-c", server.address, "-q"]
    if server.user != "admin":
        cmd += ["-u", server.user]
    if server.password:
        pw = workdir / "password.txt"
        pw.write_text(server.password)
        pw.chmod(0o600)
        cmd += ["--password-file", str(pw)]
    return cmd + args


def rename_dump(src: Path, dst: Path, renames: dict[tuple[str, str], tuple[str, str]]) -> None:
    """Copy a rethinkdb-dump archive with its tables renamed. rethinkdb-restore takes the
    target names from the paths (``<top>/<db>/<table>.json`` and ``.info``), so this is how it
    restores "into another db/table" without dropping the source."""
    with tarfile.open(src, "r:gz") as tin, tarfile.open(dst, "w:gz", compresslevel=6) as tout:
        for member in tin:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3:
                stem, ext = os.path.splitext(parts[2])
                if (parts[1], stem) in renames:
                    db, table = renames[(parts[1], stem)]
                    member.name = f"{parts[0]}/{db}/{table}{ext}"
            tout.addfile(member, tin.extractfile(member) if member.isfile() else None)


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="drtool-bench-"))


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
