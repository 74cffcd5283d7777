"""Bench: how soon a runner streams again when a server of a 3-server primary dies (issue 17).

    DRTOOL_RETHINKDB_BIN=/path/to/rethinkdb python bench/server_loss.py [--rounds 3]

Starts its own clusters from ``DRTOOL_RETHINKDB_BIN`` on free loopback ports (the
integration tests' ``LocalCluster``): a 3-server primary with three tables of 3 shards and
3 replicas, a 1-server standby (``standby_replicas = 1``), one ``drtool replicate`` runner
and an application writing into every table (reconnecting to another server on errors).
Each round kills one primary server with -9 (the first of the policy's hosts, then the
others in turn), and prints, from the kill:

* when every table is ready for writes again (RethinkDB elected new primaries);
* when a marker document written then, to every table, is on the standby (the runner moves
  data again: streamed, or copied by its repair), counted from the tables being ready;
* when ``drtool status`` shows every table streaming again, counted the same way.

The server is then restarted and the next round waits until every table streams. At the end
the application stops and ``drtool diff`` must exit 0 (printed). Not a test: nothing is
asserted, every figure is printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "integration"))

from clusters import LocalCluster, Writer, until  # noqa: E402
from rethinkdb import RethinkDB  # noqa: E402
from test_multi_server_e2e import MultiDeployment, make_tables  # noqa: E402
from test_replicate_e2e import drtool  # noqa: E402

r = RethinkDB()
TABLES = ("a", "b", "c")


def ready_for_writes(primary: LocalCluster, db: str, down: int) -> bool:
    with primary.connect(skip=down, timeout=2) as c:
        r.db(db).wait(wait_for="ready_for_writes", timeout=1).run(c)
        return True


def write_markers(primary: LocalCluster, db: str, down: int, mark: str) -> None:
    def written() -> bool:
        with primary.connect(skip=down, timeout=2) as c:
            for t in TABLES:
                r.db(db).table(t).insert({"id": mark, "t": time.time()},
                                         conflict="replace").run(c)
        return True
    until(written, "the markers to be written")


def on_standby(d: MultiDeployment, mark: str) -> bool:
    with d.conn("standby") as c:
        return all(r.db(d.db).table(t).get(mark).run(c) is not None for t in TABLES)


def streaming(d: MultiDeployment) -> bool:
    states = {t["table"]: t["state"] for t in d.status().get("tables", [])}
    return all(states.get(f"{d.db}.{t}") == "streaming" for t in TABLES)


def one_round(d: MultiDeployment, primary: LocalCluster, down: int, n: int) -> str:
    killed = time.monotonic()
    primary.servers[down].kill()
    until(lambda: ready_for_writes(primary, d.db, down), "the tables to be ready for writes")
    ready = time.monotonic()
    mark = f"marker-{n}"
    write_markers(primary, d.db, down, mark)
    until(lambda: on_standby(d, mark), "the markers on the standby", timeout=120)
    data = time.monotonic()
    until(lambda: streaming(d), "every table streaming", timeout=120)
    streams = time.monotonic()
    return (f"round {n} (server {down} killed): tables ready for writes {ready - killed:.1f} s "
            f"after the kill; markers on the standby {data - ready:.1f} s and every table "
            f"streaming {streams - ready:.1f} s after the tables were ready")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        primary = LocalCluster(base, "primary", 3).start()
        standby = LocalCluster(base, "standby", 1).start()
        writers: list[Writer] = []
        work = base / "deployment"
        work.mkdir()
        d = MultiDeployment(work, primary, standby)
        try:
            make_tables(d, {t: (3, 3, 1000) for t in TABLES})
            d.start()
            until(lambda: streaming(d), "every table streaming", timeout=120)
            writers = [Writer(primary, d.db, t) for t in TABLES]
            for w in writers:
                w.start()
            time.sleep(2)
            for n in range(args.rounds):
                down = n % len(primary.servers)
                print(one_round(d, primary, down, n), flush=True)
                primary.restart(down)
                until(lambda: streaming(d), "every table streaming after the restart",
                      timeout=120)
            acked = sum(w.stop() for w in writers)
            time.sleep(3)
            diff = drtool(d.policy, "diff")
            print(f"application: {acked} acknowledged writes; runner alive: "
                  f"{d.proc is not None and d.proc.poll() is None}; drtool diff exit "
                  f"{diff.returncode}")
        finally:
            for w in writers:
                w.stop()
            if d.proc is not None and d.proc.poll() is None:
                d.proc.kill()
            primary.stop()
            standby.stop()


if __name__ == "__main__":
    main()
