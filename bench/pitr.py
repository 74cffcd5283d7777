"""Bench of point-in-time recovery (issue 15) on a real server.

    python bench/pitr.py [--docs 200000] [--rate 2000] [--seconds 60] [--slice-every 10s]
                         [--probes 20] [--skip-restore] [--cpu]

Needs ``DRTOOL_BENCH_RETHINKDB`` (host:port of the primary; ``--cpu`` also
``DRTOOL_BENCH_RETHINKDB_STANDBY``). A table of ``--docs`` documents is made; the runner
(``python -m drtool replicate``, [archive] without [standby]) writes its base and slices; a
writer (8 threads, each on its own keys) then does ``--rate`` mixed single-document writes
per second (60% updates, 25% inserts, 15% deletes; every write sets a unique ``v``) for
``--seconds``, recording when each write was sent and acknowledged. Printed:

* archive lag (the primary's time now minus the newest sealed slice's end in the
  repository, the repository's RPO), sampled every 0.5 s from the repository's listing:
  p50/p99/max (target: p99 <= slice_every + 2 s);
* delta: for ``--probes`` random times T inside the writing window, the table's state at T
  is computed from the repository (base + slices, drtool's restore path without the writes)
  and compared with the writes' acknowledgement times: the smallest delta such that every
  write acknowledged before T - delta is in the state and none acknowledged after T + delta
  (target <= 1 s). The servers run on this host: the ack times are in the primary's clock;
* log size: stored bytes of the slices against the zstd-compressed canonical text of the
  changed documents, last version per key per slice (target <= 1.2x);
* unless ``--skip-restore``: ``restore --at`` (end of the window) against a plain ``restore``
  of the base snapshot (target <= 1.3x); then 0.1% of the documents are changed and
  ``restore --at --delta`` rewinds them: bytes moved against a full restore's (target <= 2%);
* with ``--cpu``: the runner's CPU seconds with and without [archive] at the same write rate
  (with a standby; target <= 1.3x).

Every database is unique to the run and dropped afterwards. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rethinkdb import RethinkDB  # noqa: E402

r = RethinkDB()
THREADS = 8


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] if s else float("nan")


def conn(address: str):
    host, _, port = address.rpartition(":")
    return r.connect(host=host, port=int(port), timeout=20)


def drtool(policy: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drtool", "-p", str(policy), *args],
                          capture_output=True, text=True, timeout=3600)


def iso(seconds: float) -> str:
    from datetime import UTC, datetime
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Writer(threading.Thread):
    """Mixed writes on keys of its own (``prefix``-n); records (key, v, op, sent, acked)."""

    def __init__(self, address: str, db: str, prefix: int, keys: list[int], rate: float,
                 halt: threading.Event) -> None:
        super().__init__(daemon=True)
        self.address, self.db, self.prefix, self.rate, self.halt = address, db, prefix, rate, halt
        self.live = list(keys)
        self.next = prefix * 10_000_000
        self.log: list[tuple[int, int, str, float, float]] = []

    def run(self) -> None:
        rng = random.Random(self.prefix)
        with conn(self.address) as c:
            tbl = r.db(self.db).table("t")
            start, n = time.monotonic(), 0
            while not self.halt.is_set():
                n += 1
                v = self.prefix * 100_000_000 + n
                roll = rng.random()
                sent = time.time()
                if roll < 0.25 or len(self.live) < 10:
                    self.next += 1
                    key, op = self.next, "insert"
                    tbl.insert({"id": key, "v": v, "text": words(rng, 40)}).run(c)
                    self.live.append(key)
                elif roll < 0.40:
                    key, op = self.live.pop(rng.randrange(len(self.live))), "delete"
                    tbl.get(key).delete().run(c)
                else:
                    key, op = rng.choice(self.live), "update"
                    tbl.get(key).update({"v": v, "text": words(rng, 40)}).run(c)
                self.log.append((key, v, op, sent, time.time()))
                wait = start + n / self.rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)


WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee "
         "zulu rot grün blau café naïve ключ słowo").split()


def words(rng: random.Random, n: int) -> str:
    """Text of ``n`` random words and numbers (about 300 bytes, compresses like prose)."""
    return " ".join(rng.choice(WORDS) if i % 3 else str(rng.randrange(100000))
                    for i in range(n))


def make_table(address: str, db: str, docs: int) -> None:
    rng = random.Random(1)
    with conn(address) as c:
        r.db_create(db).run(c)
        r.db(db).table_create("t").run(c)
        for s in range(0, docs, 5000):
            r.db(db).table("t").insert([{"id": i, "v": 0, "text": words(rng, 40)}
                                        for i in range(s, min(docs, s + 5000))]).run(c)


def newest_slice_end(repo_dir: Path) -> float | None:
    ends = [int(p.name.rsplit("-", 1)[1]) for p in (repo_dir / "log").glob("*/*/s-*")]
    return max(ends) / 1000 if ends else None


async def states_at(policy_path: Path, db: str, probes: list[float]) -> list[dict]:
    from drtool.changelog.restore_at import prepare
    from drtool.wiring.open import open_repository
    from drtool.model import TableName
    from drtool.config.policy import load_policy

    out = []
    async with await open_repository(load_policy(policy_path)) as repo:
        for t in probes:
            [p] = await prepare(repo, [TableName(db, "t")], int(t * 1000), {})
            state = {}
            async for _, texts in p.state.texts():
                for text in texts:
                    doc = json.loads(text)
                    state[doc["id"]] = doc["v"]
            out.append(state)
    return out


def delta_needed(t: float, state: dict, history: dict) -> float:
    """The smallest delta for which the state at ``t`` satisfies the issue's rule."""
    worst = 0.0
    for key, writes in history.items():  # writes: [(v, op, sent, acked)] in order
        shown = state.get(key)
        # candidate positions j (0 = before the first write) consistent with what is shown
        cands = []
        present_before = key < 10_000_000  # the initial documents
        if (shown == 0 and present_before) or (shown is None and not present_before):
            cands.append(0)
        for j, (v, op, _s, _a) in enumerate(writes, 1):
            if (op == "delete" and shown is None) or (op != "delete" and shown == v):
                cands.append(j)
        if not cands:
            return float("inf")
        best = float("inf")
        for j in cands:
            need = 0.0
            if j < len(writes):
                need = max(need, t - writes[j][3])  # the next write was acked before t
            if j > 0:
                need = max(need, writes[j - 1][3] - t)  # shown write acked after t
            best = min(best, need)
        worst = max(worst, best)
    return worst


async def log_size(policy_path: Path, db: str) -> tuple[int, int]:
    """(stored bytes of the table's slices, zstd size of the last version per key per slice)."""
    from drtool.changelog.slices import decode_slice
    from drtool.changelog.timeline import load_timelines
    from drtool.wiring.open import open_repository
    from drtool.model import TableName
    from drtool.config.policy import load_policy
    from drtool.repo.compression import compress

    stored = reference = 0
    async with await open_repository(load_policy(policy_path)) as repo:
        for tl in await load_timelines(repo, TableName(db, "t")):
            for ref in tl.slices:
                stored += ref.size
                _, entries = decode_slice(ref.name, await repo.get_slice(ref.name))
                last = {}
                for _s, key, doc in entries:
                    last[key] = doc or ""
                reference += len(compress("\n".join(last.values()).encode()))
    return stored, reference


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_policy(tmp: Path, address: str, db: str, slice_every: str, *, archive: bool = True,
                 standby: str | None = None) -> Path:
    policy = tmp / f"policy-{uuid.uuid4().hex[:6]}.toml"
    lines = [f'name = "bench{uuid.uuid4().hex[:6]}"', "[primary]", f'hosts = ["{address}"]',
             "[repository]", f'url = "file://{tmp / "repo"}"',
             "[encryption]", f'identity_file = "{tmp / "id.txt"}"',
             "[tables]", f'include = ["{db}.*"]', "[replication]", 'schema_poll = "2s"',
             f'state_db = "{db}_state"']
    if standby:
        lines += ["[standby]", f'hosts = ["{standby}"]']
    if archive:
        lines += ["[archive]", f'slice_every = "{slice_every}"', f'spool = "{tmp / "spool"}"']
    policy.write_text("\n".join(lines) + "\n")
    return policy


def run_writers(address: str, db: str, docs: int, rate: float, seconds: float):
    halt = threading.Event()
    per = [list(range(i, docs, THREADS)) for i in range(THREADS)]
    writers = [Writer(address, db, i + 1, per[i], rate / THREADS, halt) for i in range(THREADS)]
    for w in writers:
        w.start()
    time.sleep(seconds)
    halt.set()
    for w in writers:
        w.join()
    return writers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--slice-every", default="10s")
    ap.add_argument("--probes", type=int, default=20)
    ap.add_argument("--skip-restore", action="store_true")
    ap.add_argument("--cpu", action="store_true")
    args = ap.parse_args()
    address = os.environ["DRTOOL_BENCH_RETHINKDB"]
    db = "drtool_bench_" + uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="pitr-bench-"))
    subprocess.run([sys.executable, "-m", "drtool", "keygen", "--out", str(tmp / "id.txt")],
                   check=True, capture_output=True)
    policy = write_policy(tmp, address, db, args.slice_every)
    assert drtool(policy, "init").returncode == 0
    print(f"table of {args.docs} documents; {args.rate:g} writes/s for {args.seconds:g} s; "
          f"slice_every {args.slice_every}")
    make_table(address, db, args.docs)
    log = (tmp / "runner.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "drtool", "-p", str(policy), "replicate"],
                            stdout=log, stderr=log)
    try:
        while newest_slice_end(tmp / "repo") is None or not list((tmp / "repo").glob("log/*/*/b-*")):
            time.sleep(0.5)
        time.sleep(2)
        lags: list[float] = []
        halt = threading.Event()

        def sample() -> None:
            while not halt.is_set():
                end = newest_slice_end(tmp / "repo")
                if end is not None:
                    lags.append(time.time() - end)
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        began = time.time()
        writers = run_writers(address, db, args.docs, args.rate, args.seconds)
        ended = time.time()
        halt.set()
        writes = sum(len(w.log) for w in writers)
        print(f"writes: {writes} in {ended - began:.1f} s ({writes / (ended - began):.0f}/s)")
        print(f"archive lag (s): p50 {pct(lags, 50):.2f}  p99 {pct(lags, 99):.2f}  "
              f"max {max(lags):.2f}  (target p99 <= slice_every + 2 s)")
        while (newest_slice_end(tmp / "repo") or 0) < ended + 1:
            time.sleep(0.5)
        history: dict[int, list] = {}
        for w in writers:
            for key, v, op, sent, acked in w.log:
                history.setdefault(key, []).append((v, op, sent, acked))
        rng = random.Random(7)
        probes = sorted(rng.uniform(began + 1, ended - 1) for _ in range(args.probes))
        states = asyncio.run(states_at(policy, db, probes))
        deltas = [delta_needed(t, s, history) for t, s in zip(probes, states)]
        print(f"delta over {len(probes)} random T: max {max(deltas):.3f} s, p50 "
              f"{pct(deltas, 50):.3f} s (target <= 1 s)")
        stored, reference = asyncio.run(log_size(policy, db))
        print(f"log size: {stored} bytes stored, reference {reference} bytes: "
              f"{stored / max(reference, 1):.2f}x (target <= 1.2x)")
        if not args.skip_restore:
            restore_figures(policy, tmp, address, db, ended, args.docs)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        log.close()
    if args.cpu:
        cpu_figures(tmp, address, db, args)
    with conn(address) as c:
        for name in (db, f"{db}_state"):
            if name in r.db_list().run(c):
                r.db_drop(name).run(c)


def restore_figures(policy: Path, tmp: Path, address: str, db: str, ended: float,
                    docs: int) -> None:
    base = sorted(p.name[2:] for p in (tmp / "repo").glob("log/*/*/b-*"))[-1]
    started = time.monotonic()
    done = drtool(policy, "restore", base, "--table", f"{db}.t", "--rename", f"{db}.t={db}.plain", "-q")
    plain = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    started = time.monotonic()
    done = drtool(policy, "restore", "--at", iso(ended + 0.5), "--table", f"{db}.t",
                  "--rename", f"{db}.t={db}.at", "-q")
    at = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    print(f"restore of the base: {plain:.1f} s; restore --at (the base and the whole log): "
          f"{at:.1f} s: {at / plain:.2f}x (target <= 1.3x)")
    with conn(address) as c:
        tbl = r.db(db).table("at")
        full_bytes = r.db(db).table("at").map(lambda d: d.to_json_string().count()).sum().run(c)
        changed = max(1, docs // 1000)
        ids = [d["id"] for d in tbl.sample(changed).pluck("id").run(c)]
        tbl.get_all(r.args(ids)).update({"v": -1}).run(c)
    done = drtool(policy, "restore", "--at", iso(ended + 0.5), "--table", f"{db}.t",
                  "--rename", f"{db}.t={db}.at", "--delta", "--json", "-q")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)["tables"][0]
    moved = rep["bytes_written"] + rep["traffic"]["bytes"]
    print(f"restore --at --delta after {changed} documents changed: {moved} bytes moved, "
          f"{100 * moved / full_bytes:.2f}% of a full restore's {full_bytes} (target <= 2%)")


def cpu_figures(tmp: Path, address: str, db: str, args) -> None:
    standby = os.environ["DRTOOL_BENCH_RETHINKDB_STANDBY"]
    figures = {}
    for archive in (False, True):
        name = f"{db}_cpu{int(archive)}"
        make_table(address, name, 20_000)
        policy = write_policy(tmp, address, name, args.slice_every, archive=archive,
                              standby=standby)
        proc = subprocess.Popen([sys.executable, "-m", "drtool", "-p", str(policy), "replicate"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(15)  # copy done, streaming (and base written)
        before = cpu_seconds(proc.pid)
        run_writers(address, name, 20_000, args.rate, args.seconds)
        time.sleep(2)
        figures[archive] = cpu_seconds(proc.pid) - before
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        for server in (address, standby):
            with conn(server) as c:
                for d in (name, f"{name}_state"):
                    if d in r.db_list().run(c):
                        r.db_drop(d).run(c)
    print(f"runner CPU: {figures[False]:.1f} s without [archive], {figures[True]:.1f} s with: "
          f"{figures[True] / max(figures[False], 1e-9):.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
