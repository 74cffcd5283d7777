"""Breaks of the change log on real RethinkDB servers: the runner killed with -9 mid-slice,
a feed overflow, the primary server killed and started again. Each produces a new timeline
with its own base and a correct timeline (``drtool timeline``, ``drtool status``), no slice
that fails to read (``verify --read-data``), and ``restore --at`` the end gives the table as
it is. The server-restart test starts its own throw-away primary (``DRTOOL_RETHINKDB_BIN``).
"""

from __future__ import annotations

import json
import signal
import time

from rethinkdb import RethinkDB

from conftest import ThrowawayServer
from test_pitr_e2e import LogDeployment, drtool, initialised, iso, wait_until

r = RethinkDB()


def setup(tmp_path, address: str, docs: int = 500) -> LogDeployment:
    d = initialised(tmp_path, address)
    with d.conn() as c:
        r.db(d.db).table("t").insert([{"id": i, "v": i} for i in range(docs)]).run(c)
    return d


def timelines(d: LogDeployment) -> list[dict]:
    return d.timeline("t")["timelines"]


def restorable_on_a_new_timeline(d: LogDeployment, before: int, until: float) -> dict:
    def ready():
        assert d.proc is None or d.proc.poll() is None, d.log.read_text()
        got = d.timeline("t")
        spans = got["restorable"]
        return (got if len(got["timelines"]) > before and spans
                and spans[-1]["to_ms"] > until * 1000 else None)
    return wait_until(ready, "a new restorable timeline")


def end_state_restores(d: LogDeployment, name: str) -> None:
    wanted = d.contents("t")
    at = iso(time.time())
    d.restorable_until("t", time.time() + 1)
    done = drtool(d.policy, "restore", "--at", at, "--table", f"{d.db}.t", "--rename",
                  f"{d.db}.t={d.db}.{name}", "-q")
    assert done.returncode == 0, done.stderr
    assert d.contents(name) == wanted
    checked = drtool(d.policy, "verify", "--read-data", "-q")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_runner_killed_mid_slice_then_restarted(tmp_path, primary):
    d = setup(tmp_path, primary.address)
    try:
        d.start()
        d.restorable_until("t", time.time())
        with d.conn() as c:
            r.db(d.db).table("t").insert([{"id": 1000 + i} for i in range(100)]).run(c)
        time.sleep(0.3)  # inside the open slice (slice_every 1s)
        d.proc.kill()  # -9
        d.proc.wait()
        d.proc = None
        with d.conn() as c:  # written while no runner runs: in the next base
            r.db(d.db).table("t").get(1).update({"v": "while down"}).run(c)
        d.start()
        restorable_on_a_new_timeline(d, 1, time.time())
        assert all(tl["bases"] for tl in timelines(d))
        end_state_restores(d, "after_kill")
        assert d.stop() == 0
    finally:
        d.cleanup()


def test_feed_overflow_starts_a_new_timeline(tmp_path, primary):
    d = setup(tmp_path, primary.address)
    text = d.policy.read_text().replace('schema_poll = "1s"',
                                        'schema_poll = "1s"\nchangefeed_queue_size = 10')
    d.policy.write_text(text)
    try:
        d.start()
        d.restorable_until("t", time.time())
        with d.conn() as c:  # 5,000 changes at once into a feed that keeps 10
            r.db(d.db).table("t").insert([{"id": 10_000 + i, "pad": "x" * 100}
                                          for i in range(5000)]).run(c)
        restorable_on_a_new_timeline(d, 1, time.time())
        status = json.loads(drtool(d.policy, "status", "--json").stdout)
        logged = status["repository"]["archive"]["tables"][f"{d.db}.t"]
        assert logged["breaks"].get("feed-overflow", 0) >= 1
        end_state_restores(d, "after_overflow")
        assert d.stop() == 0
    finally:
        d.cleanup()


def test_primary_server_killed_and_started_again(tmp_path):
    server = ThrowawayServer(tmp_path / "primary-data", "drtool_pitr_throwaway")
    server.start()
    (tmp_path / "cfg").mkdir()
    try:
        wait_until(server.answering, "the throw-away primary")
        d = setup(tmp_path / "cfg", server.address)
        d.start()
        d.restorable_until("t", time.time())
        server.kill()  # -9
        time.sleep(2)
        server.start()
        wait_until(server.answering, "the throw-away primary again")
        with d.conn() as c:
            r.db(d.db).table("t").wait(timeout=60).run(c)
            r.db(d.db).table("t").get(2).update({"v": "after restart"}).run(c)
        restorable_on_a_new_timeline(d, 1, time.time())
        status = json.loads(drtool(d.policy, "status", "--json").stdout)
        logged = status["repository"]["archive"]["tables"][f"{d.db}.t"]
        assert logged["breaks"].get("connection-lost", 0) >= 1
        end_state_restores(d, "after_restart")
        assert d.stop(signal.SIGTERM) == 0
    finally:
        server.kill()
