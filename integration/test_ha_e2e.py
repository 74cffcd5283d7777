"""Runners backing each other up, end to end on the real servers: a second ``drtool
replicate`` waits as a hot spare (shown by ``drtool status``) and takes over when the active
one is killed with -9; nothing is lost (``drtool diff`` reports the standby equal) and the
table is repaired, never copied again."""

from __future__ import annotations

import signal
import subprocess
import sys

from rethinkdb import RethinkDB

from test_replicate_e2e import Deployment, wait_until

r = RethinkDB()


def test_a_spare_takes_over_after_kill9_of_the_active_runner(tmp_path, primary, standby):
    d = Deployment(tmp_path, primary.address, standby.address)
    assert subprocess.run([sys.executable, "-m", "drtool", "keygen", "--out",
                           str(tmp_path / "id.txt")], capture_output=True).returncode == 0
    spare = None
    try:
        with d.conn() as c:
            r.db_create(d.db).run(c)
            r.db(d.db).table_create("t").run(c)
            r.db(d.db).table("t").insert([{"id": i, "v": "x" * 100} for i in range(500)]).run(c)
        active = d.start()
        d.streaming({"t"})
        spare = d.start()  # the second process: waits
        wait_until(lambda: d.status().get("spares"), "the second runner to show as a spare")
        status = d.status()
        assert status["lease"]["pid"] == active.pid
        assert [s["pid"] for s in status["spares"]] == [spare.pid]
        active.send_signal(signal.SIGKILL)
        active.wait()
        with d.conn() as c:  # the application keeps writing while no runner is active
            r.db(d.db).table("t").insert([{"id": 1000 + i} for i in range(50)]).run(c)
            r.db(d.db).table("t").get(3).delete().run(c)
        wait_until(lambda: (d.status().get("lease") or {}).get("pid") == spare.pid,
                   "the spare to take the lease")
        d.streaming({"t"})
        d.equal()
        assert spare.poll() is None
        log = d.log.read_text()
        assert log.count("runner-spare") == 1
        assert log.count("table-copied") == 1  # the first runner's copy only
        assert d.status()["spares"] == []
    finally:
        if spare is not None and spare.poll() is None:
            spare.kill()
            spare.wait()
        d.cleanup()


def test_two_runner_processes_share_the_tables_and_one_takes_all_after_kill9(
        tmp_path, primary, standby):
    d = Deployment(tmp_path, primary.address, standby.address, share_tables="true")
    assert subprocess.run([sys.executable, "-m", "drtool", "keygen", "--out",
                           str(tmp_path / "id.txt")], capture_output=True).returncode == 0
    names = [f"t{i}" for i in range(6)]
    second = None
    try:
        with d.conn() as c:
            r.db_create(d.db).run(c)
            for name in names:
                r.db(d.db).table_create(name).run(c)
                r.db(d.db).table(name).insert([{"id": i} for i in range(200)]).run(c)
        first = d.start()
        second = d.start()

        def split():
            owners = d.status().get("owners") or {}
            return len(owners) == len(names) and len(set(owners.values())) == 2 and owners
        try:
            wait_until(split, "the two runners to split the tables", timeout=120)
        except AssertionError as err:  # failed once in CI (xdist, loaded): say what was seen
            raise AssertionError(f"{err}; status: {d.status()}; runner log:\n"
                                 f"{d.log.read_text()[-6000:]}") from None
        d.streaming(set(names))
        d.equal()
        first.send_signal(signal.SIGKILL)
        first.wait()
        with d.conn() as c:  # written while nobody replicates the first runner's tables
            for name in names:
                r.db(d.db).table(name).insert({"id": "after the kill"}).run(c)

        def one_owner():
            owners = d.status().get("owners") or {}
            return len(owners) == len(names) and len(set(owners.values())) == 1
        wait_until(one_owner, "the second runner to take every table")
        d.streaming(set(names))
        d.equal()
        assert second.poll() is None
        log = d.log.read_text()
        assert log.count("table-copied") <= len(names)  # each table copied at most once
    finally:
        if second is not None and second.poll() is None:
            second.kill()
            second.wait()
        d.cleanup()
