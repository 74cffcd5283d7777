"""Bench of ``drtool replicate`` (issue 9) on two real servers.

    python bench/replicate.py [--docs 20000] [--rate 2000] [--seconds 60] [--kill-at 30]

Needs ``DRTOOL_BENCH_RETHINKDB`` (primary) and ``DRTOOL_BENCH_RETHINKDB_STANDBY`` (host:port).
A table of ``--docs`` documents is made on the primary; the runner (``python -m drtool
replicate`` as a subprocess) copies it and streams; a writer then does ``--rate`` mixed
single-document writes per second (60% updates, 25% inserts, 15% deletes) for ``--seconds``.
At ``--kill-at`` seconds the runner is killed with -9 and started again (as soon as its lease
expires: lease_ttl 3s here). Printed:

* lag from the heartbeat, sampled every 100 ms as ``drtool status`` computes it (the
  primary's r.now() minus the newest heartbeat time on the standby: includes the up-to-1 s
  age of the heartbeat itself, pt-heartbeat's method), and each heartbeat's delivery delay
  (the primary's r.now() when the heartbeat appeared on the standby minus its time: the
  pipeline's own latency), p50/p99/max, outside the kill/restart window;
* seconds until ``diff`` reports the standby equal after the writer stops (target <= 5 s);
* what the repair after the restart read and wrote, against the table size (no full recopy).

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
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drtool.cluster import connect  # noqa: E402
from drtool.compare.diff import diff_table  # noqa: E402
from drtool.model import ClusterConfig, TableName  # noqa: E402


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")


def drtool(policy: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drtool", "-p", str(policy), *args],
                          capture_output=True, text=True, cwd=ROOT)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.primary = os.environ["DRTOOL_BENCH_RETHINKDB"]
        self.standby = os.environ["DRTOOL_BENCH_RETHINKDB_STANDBY"]
        self.db = "drtool_bench_" + uuid.uuid4().hex[:8]
        self.state_db = "drtool_bench_state_" + uuid.uuid4().hex[:8]
        self.name = "bench" + uuid.uuid4().hex[:6]
        self.dir = Path(tempfile.mkdtemp(prefix="drtool-bench-replicate-"))
        self.policy = self.dir / "policy.toml"
        self.log = self.dir / "runner.log"
        self.table = TableName(self.db, "t")
        self.proc: subprocess.Popen | None = None
        self.outage = (0.0, 0.0)

    def write_policy(self) -> None:
        self.policy.write_text("\n".join([
            f'name = "{self.name}"', "[primary]", f'hosts = ["{self.primary}"]',
            "[standby]", f'hosts = ["{self.standby}"]',
            "[repository]", f'url = "file://{self.dir / "repo"}"',
            "[encryption]", f'identity_file = "{self.dir / "id.txt"}"',
            "[tables]", f'include = ["{self.db}.*"]',
            "[replication]", f'state_db = "{self.state_db}"', 'lease_ttl = "3s"']) + "\n")
        subprocess.run([sys.executable, "-m", "drtool", "keygen", "--out",
                        str(self.dir / "id.txt")], capture_output=True, cwd=ROOT, check=True)

    def start_runner(self) -> None:
        """Start the runner; while a killed runner's lease lasts it exits 8: start it again."""
        while True:
            started = len(self.events("runner-started"))
            with self.log.open("a") as out:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "drtool", "-p", str(self.policy), "replicate",
                     "--log-format", "json"], stdout=out, stderr=out, cwd=ROOT)
            while self.proc.poll() is None and len(self.events("runner-started")) == started:
                time.sleep(0.1)
            if self.proc.poll() is None:
                return
            if self.proc.returncode != 8:
                raise RuntimeError(f"the runner exited {self.proc.returncode}; see {self.log}")

    def events(self, name: str) -> list[dict]:
        out = []
        if not self.log.exists():
            return out
        for line in self.log.read_text().splitlines():
            if line.startswith("{") and f'"event": "{name}"' in line:
                out.append(json.loads(line))
        return out

    async def run(self) -> None:
        a = self.args
        self.write_policy()
        p = await connect(ClusterConfig("primary", (self.primary,)))
        s = await connect(ClusterConfig("standby", (self.standby,)))
        try:
            await p.ensure_db(self.db)
            await p.create_table(self.table, primary_key="id", shards=1, replicas=1)
            pad = "x" * 300
            for start in range(0, a.docs, 1000):
                await p.insert_texts(self.table, ['{"id":%d,"n":0,"pad":"%s"}' % (i, pad)
                                                  for i in range(start, min(a.docs, start + 1000))])
            self.start_runner()
            await self.wait_streaming()
            print(f"initial copy of {a.docs} documents done; writing {a.rate}/s for "
                  f"{a.seconds} s, kill -9 of the runner at {a.kill_at} s")
            stop = asyncio.Event()
            samples: list[tuple[float, float]] = []
            deliveries: list[tuple[float, float]] = []
            t0 = time.monotonic()
            tasks = [asyncio.create_task(self.writer(stop, t0)),
                     asyncio.create_task(self.sample(p, s, stop, samples, t0)),
                     asyncio.create_task(self.deliveries(p, s, stop, deliveries, t0)),
                     asyncio.create_task(self.killer(t0))]
            await asyncio.sleep(a.seconds)
            stop.set()
            writes = await tasks[0]
            await asyncio.gather(*tasks[1:])
            ended = time.monotonic()
            while not (await diff_table(p, s, self.table)).equal:
                await asyncio.sleep(0.1)
            equal_after = time.monotonic() - ended
            self.report(writes, samples, deliveries, equal_after, await p.doc_count_estimate(self.table))
        finally:
            if self.proc is not None:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(60)
            for c in (p, s):
                await c.drop_db(self.db)
                await c.drop_db(self.state_db)
                await c.close()

    async def wait_streaming(self) -> None:
        while True:
            got = drtool(self.policy, "status", "--json")
            tables = json.loads(got.stdout or "{}").get("tables", [])
            if [t["state"] for t in tables] == ["streaming"]:
                return
            await asyncio.sleep(0.5)

    async def writer(self, stop: asyncio.Event, t0: float) -> int:
        """Single-document writes from 16 concurrent clients, paced to --rate."""
        a, rng = self.args, random.Random(1)
        keys = list(range(a.docs))
        next_key, done = a.docs, 0
        c = await connect(ClusterConfig("primary", (self.primary,)))

        async def one(kind: str, key: int) -> None:
            if kind == "insert":
                await c.insert_texts(self.table, ['{"id":%d,"n":1,"pad":"new"}' % key])
            elif kind == "update":
                await c.insert_texts(self.table, ['{"id":%d,"n":%d,"pad":"upd"}' % (key, done)],
                                     conflict="replace")
            else:
                await c.delete_keys(self.table, [str(key)])

        slots = asyncio.Semaphore(16)
        pending: set[asyncio.Task] = set()
        while not stop.is_set():
            due = int((time.monotonic() - t0) * a.rate)
            while done < due:
                roll = rng.random()
                if roll < 0.25:
                    kind, key = "insert", next_key
                    keys.append(next_key)
                    next_key += 1
                elif roll < 0.40 and keys:
                    kind, key = "delete", keys.pop(rng.randrange(len(keys)))
                else:
                    kind, key = "update", rng.choice(keys)
                await slots.acquire()
                task = asyncio.create_task(one(kind, key))
                task.add_done_callback(lambda _t: slots.release())
                pending.add(task)
                task.add_done_callback(pending.discard)
                done += 1
            await asyncio.sleep(0.005)
        await asyncio.gather(*pending)
        await c.close()
        return done

    async def sample(self, p, s, stop, out, t0) -> None:
        from drtool.coordination.state import StateStore, lag_seconds
        store = StateStore(s, self.state_db, self.name)
        while not stop.is_set():
            lag, _ = await lag_seconds(p, store)
            if lag is not None:
                out.append((time.monotonic() - t0, lag))
            await asyncio.sleep(0.1)

    async def deliveries(self, p, s, stop, out, t0) -> None:
        """Each heartbeat as it appears on the standby (a feed there): the primary's r.now()
        at that moment minus the heartbeat's time."""
        hb = TableName(self.state_db, "heartbeat")

        async def read() -> None:
            async for event in s.changes(hb):
                doc = getattr(event, "doc", None)
                if doc and '"time"' in doc:
                    now = await p.server_time()
                    out.append((time.monotonic() - t0, now - json.loads(doc)["time"]["epoch_time"]))

        reader = asyncio.create_task(read())
        await stop.wait()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)

    async def killer(self, t0: float) -> None:
        await asyncio.sleep(self.args.kill_at)
        killed = time.monotonic() - t0
        self.proc.kill()
        self.proc.wait()
        await asyncio.to_thread(self.start_runner)
        await asyncio.to_thread(self.wait_until_repaired)
        self.outage = (killed, time.monotonic() - t0)

    def wait_until_repaired(self) -> None:
        deadline = time.monotonic() + 600
        while not [e for e in self.events("repair-finished") if e.get("table") == str(self.table)]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no repair-finished after the restart; see {self.log}")
            time.sleep(0.2)

    def report(self, writes, samples, deliveries, equal_after, docs_now) -> None:
        a = self.args
        lo, hi = self.outage
        print(f"writes: {writes} in {a.seconds} s ({writes / a.seconds:.0f}/s)")
        print(f"runner killed at {lo:.1f} s, repaired and streaming again at {hi:.1f} s")
        for what, rows in (("lag (status method, sampled every 100 ms)", samples),
                           ("heartbeat delivery delay", deliveries)):
            steady = [v for t, v in rows if not lo <= t <= hi + 2]
            print(f"{what}, outside the kill window: p50 {pct(steady, 50):.3f} s, p99 "
                  f"{pct(steady, 99):.3f} s, max {max(steady, default=float('nan')):.3f} s "
                  f"({len(steady)} samples); max over the whole run {max((v for _, v in rows), default=float('nan')):.3f} s")
        print(f"diff equal {equal_after:.2f} s after the writer stopped (target <= 5 s)")
        for e in [e for e in self.events("repair-finished") if e.get("table") == str(self.table)]:
            print(f"repair after {e['reason']}: {e['differing']} documents differed; read "
                  f"{e['read']}, wrote {e['written']}, deleted {e['deleted']} of a table of "
                  f"~{docs_now} documents ({e['bytes']} bytes, {e['seconds']} s)")
        print(f"command: python bench/replicate.py --docs {a.docs} --rate {a.rate} "
              f"--seconds {a.seconds} --kill-at {a.kill_at}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--kill-at", type=float, default=30)
    args = parser.parse_args()
    for var in ("DRTOOL_BENCH_RETHINKDB", "DRTOOL_BENCH_RETHINKDB_STANDBY"):
        if not os.environ.get(var):
            sys.exit(f"set {var}=host:port (see the module docstring)")
    asyncio.run(Bench(args).run())


if __name__ == "__main__":
    main()
