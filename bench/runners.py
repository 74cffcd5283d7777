"""Bench: how much one runner carries, two runners splitting, and a spare's takeover (issue 17).

    python bench/runners.py [--seconds 20] [--docs-bytes 500] [--tables 4] [--feed-gather 0.1s]

Needs ``DRTOOL_BENCH_RETHINKDB`` (primary) and ``DRTOOL_BENCH_RETHINKDB_STANDBY`` (host:port).
Runners are ``python -m drtool replicate`` subprocesses; their CPU is read from
``/proc/<pid>/stat`` (user + system). Printed, one line each:

* idle: CPU-s per second of one streaming runner with no writes (heartbeat, polls);
* load at 500 and 2,000 changes/s and at the writer's maximum (4 writer threads, ~``--docs-bytes``
  documents, over ``--tables`` tables), first inserts of new keys, then a mix of inserts,
  updates of hot keys and deletes: changes/s written, runner CPU-s per 1,000 changes (in
  all, and above its idle cost), heartbeat lag at the end of the window;
* the same maximum with two runners sharing the tables (``share_tables``): each runner's
  tables and CPU-s per 1,000 changes;
* takeover: a spare waiting, the active runner killed -9: seconds until the spare holds the
  lease and every table streams (``lease_ttl`` 3 s here), and whether any table was copied
  again.

Every database is unique to the run and dropped afterwards. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from rethinkdb import RethinkDB

ROOT = Path(__file__).resolve().parent.parent
r = RethinkDB()
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def connect(address: str):
    host, _, port = address.rpartition(":")
    return r.connect(host=host, port=int(port), timeout=10)


class Setup:
    def __init__(self, args: argparse.Namespace, tmp: Path, share: bool) -> None:
        self.args, self.tmp = args, tmp
        self.primary = os.environ["DRTOOL_BENCH_RETHINKDB"]
        self.standby = os.environ["DRTOOL_BENCH_RETHINKDB_STANDBY"]
        self.db = "bench_runners_" + uuid.uuid4().hex[:8]
        self.state_db = "bench_runners_state_" + uuid.uuid4().hex[:8]
        self.tables = [f"t{i}" for i in range(args.tables)]
        self.policy = tmp / f"policy-{self.db}.toml"
        self.policy.write_text("\n".join([
            f'name = "b{uuid.uuid4().hex[:6]}"', "[primary]", f'hosts = ["{self.primary}"]',
            "[standby]", f'hosts = ["{self.standby}"]', "[repository]",
            f'url = "file://{tmp / "repo"}"', "[tables]", f'include = ["{self.db}.*"]',
            "[replication]", f'state_db = "{self.state_db}"', 'lease_ttl = "3s"',
            f"share_tables = {'true' if share else 'false'}",
            f'feed_gather = "{args.feed_gather}"']) + "\n")
        self.procs: list[subprocess.Popen] = []
        with connect(self.primary) as c:
            r.db_create(self.db).run(c)
            for t in self.tables:
                r.db(self.db).table_create(t).run(c)

    def start(self) -> subprocess.Popen:
        log = (self.tmp / f"{self.db}.log").open("a")
        proc = subprocess.Popen([sys.executable, "-m", "drtool", "-p", str(self.policy),
                                 "replicate"], stdout=log, stderr=log, cwd=ROOT)
        self.procs.append(proc)
        return proc

    def status(self) -> dict:
        done = subprocess.run([sys.executable, "-m", "drtool", "-p", str(self.policy), "status",
                               "--json"], capture_output=True, text=True, cwd=ROOT)
        return json.loads(done.stdout) if done.stdout.strip() else {}

    def streaming(self) -> dict:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            got = self.status()
            states = {t["table"]: t["state"] for t in got.get("tables", [])}
            if all(states.get(f"{self.db}.{t}") == "streaming" for t in self.tables):
                return got
            time.sleep(0.2)
        raise SystemExit("the tables never streamed")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for address in (self.primary, self.standby):
            with connect(address) as c:
                for db in (self.db, self.state_db):
                    if db in r.db_list().run(c):
                        r.db_drop(db).run(c)


def write(setup: Setup, rate: float | None, seconds: float, mix: str) -> int:
    """Write at ``rate`` changes/s in total (None: as fast as 4 threads go; single documents
    up to 500/s, 4 per request above, 100 at the maximum); returns how many changes were
    written. ``mix`` "inserts": new keys only; "mixed": a third each of inserts of new keys,
    updates of a writer's 500 hot keys and deletes of keys it inserted before."""
    body = "x" * max(0, setup.args.docs_bytes - 40)
    counts = [0] * 4
    end = time.monotonic() + seconds
    batch = 100 if rate is None else (1 if rate <= 500 else 4)

    def request(i: int, n: int, table: str):
        """Writer ``i``'s request at change ``n``: inserts, or the mix's third of them."""
        t = r.db(setup.db).table(table)
        kind = 0 if mix == "inserts" else (n // batch) % 3
        if kind == 0:
            return t.insert([{"id": f"{i}-{n + k}", "v": body} for k in range(batch)],
                            durability="soft")
        if kind == 1:
            hot = [{"id": f"{i}-hot-{(n + k) % 500}", "v": body, "n": n} for k in range(batch)]
            return t.insert(hot, conflict="replace", durability="soft")
        old = [f"{i}-{n - 2 * batch + k}" for k in range(batch)]  # inserted two steps ago
        return t.get_all(*old).delete(durability="soft")

    def worker(i: int) -> None:
        with connect(setup.primary) as c:
            n, start = 0, time.monotonic()
            while time.monotonic() < end:
                table = setup.tables[(n // batch + i) % len(setup.tables)]
                request(i, n, table).run(c)
                n += batch
                counts[i] = n
                if rate is not None:
                    time.sleep(max(0.0, start + n / (rate / 4) - time.monotonic()))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def load(setup: Setup, runners: list[subprocess.Popen], rate: float | None,
         idle: float = 0.0, mix: str = "inserts") -> str:
    """One load phase: changes/s, CPU-s per 1,000 changes of each runner (and, given the
    ``idle`` CPU-s per second, what the changes cost above idling), the lag after it."""
    before = [cpu_seconds(p.pid) for p in runners]
    started = time.monotonic()
    changes = write(setup, rate, setup.args.seconds, mix)
    took = time.monotonic() - started
    time.sleep(2)  # the runners finish applying
    window = time.monotonic() - started
    cpu = [cpu_seconds(p.pid) - b for p, b in zip(runners, before)]
    lag = setup.status().get("lag_seconds")
    per = " + ".join(f"{c / changes * 1000:.4f}" for c in cpu)
    above = (f" ({(sum(cpu) - idle * window) / changes * 1000:.4f} above idle)"
             if idle and len(runners) == 1 else "")
    return (f"{mix} {'max' if rate is None else int(rate)}/s: {changes / took:,.0f} changes/s "
            f"written, CPU-s per 1,000 changes {per}{above}, lag after {lag} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--docs-bytes", type=int, default=500)
    ap.add_argument("--tables", type=int, default=4)
    ap.add_argument("--feed-gather", default="0.1s", help='[replication] feed_gather, "0s": none')
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = Setup(args, Path(tmp), share=False)
        try:
            runner = one.start()
            one.streaming()
            before, t0 = cpu_seconds(runner.pid), time.monotonic()
            time.sleep(args.seconds)
            idle = (cpu_seconds(runner.pid) - before) / (time.monotonic() - t0)
            print(f"idle: {idle:.4f} CPU-s per second (feed_gather {args.feed_gather})")
            for mix in ("inserts", "mixed"):
                for rate in (500, 2000, None):
                    print("one runner, " + load(one, [runner], rate, idle, mix), flush=True)
            spare = one.start()
            time.sleep(3)
            runner.send_signal(signal.SIGKILL)
            runner.wait()
            killed = time.monotonic()
            while (one.status().get("lease") or {}).get("pid") != spare.pid:
                time.sleep(0.1)
            held = time.monotonic() - killed
            one.streaming()
            log = (Path(tmp) / f"{one.db}.log").read_text()
            print(f"takeover: lease after {held:.1f} s, every table streaming after "
                  f"{time.monotonic() - killed:.1f} s (lease_ttl 3 s); tables copied: "
                  f"{log.count('table-copied')} of {len(one.tables)} (the first runner's)")
        finally:
            one.close()
        two = Setup(args, Path(tmp), share=True)
        try:
            runners = [two.start(), two.start()]
            two.streaming()
            owners = two.status().get("owners") or {}
            split = sorted(list(owners.values()).count(o) for o in set(owners.values()))
            print(f"two runners sharing (tables per runner {split}), " + load(two, runners, None))
        finally:
            two.close()


if __name__ == "__main__":
    main()
