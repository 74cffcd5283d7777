"""``drtool failover`` / ``drtool failback`` end to end against real RethinkDB servers.

The runner runs as a subprocess (``drtool replicate``); the application is a thread writing
as its own user (unique name, created on the primary with a permission on the test's
database only, dropped from both servers afterwards) that records every acknowledged write and
retries a refused one against the other cluster. Kill -9 tests use the DRTOOL_FAILPOINT hook
(the failover process kills itself with SIGKILL right after recording a step). The unplanned
test starts its own primary from DRTOOL_RETHINKDB_BIN so it can kill it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from rethinkdb import RethinkDB

from conftest import ThrowawayServer
from test_replicate_e2e import Deployment, drtool, make_table, wait_until

r = RethinkDB()
PLANNED = ("fence", "drain", "stop-replication", "final-diff", "promote")


class App:
    """The application user and a writer thread (driver, blocking)."""

    def __init__(self, d: Deployment, table: str = "t") -> None:
        self.d, self.table = d, table
        self.user = "drtool_it_app_" + uuid.uuid4().hex[:8]
        self.password = "pw-" + uuid.uuid4().hex
        os.environ["DRTOOL_IT_APP_PASSWORD"] = self.password
        with d.conn() as c:
            r.db("rethinkdb").table("users").insert({"id": self.user, "password": self.password}).run(c)
            r.db(d.db).grant(self.user, {"read": True, "write": True}).run(c)
        self.acked: list[tuple[int, float]] = []  # (id, time acknowledged)
        self.role, self.refused = "primary", 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def section(self) -> str:
        return (f'[failover]\napp_users = ["{self.user}"]\ndrain_timeout = "30s"\nmax_lag = "10s"\n'
                f'[failover.users.{self.user}]\npassword_env = "DRTOOL_IT_APP_PASSWORD"\n')

    def conn(self, role: str):
        host, _, port = getattr(self.d, role).rpartition(":")
        return r.connect(host=host, port=int(port), user=self.user, password=self.password, timeout=5)

    def _run(self) -> None:
        n, conns = 0, {}
        while not self._stop.is_set():
            try:
                if self.role not in conns:
                    conns[self.role] = self.conn(self.role)
                res = r.db(self.d.db).table(self.table).insert({"id": 10**6 + n, "w": n}).run(conns[self.role])
                ok = res["inserted"] == 1
            except (r.errors.ReqlError, OSError):
                conns.pop(self.role, None)
                ok = False
            if ok:
                self.acked.append((10**6 + n, time.time()))
                n += 1
            else:
                self.refused += 1
                self.role = "standby" if self.role == "primary" else "primary"
                time.sleep(0.02)
            time.sleep(0.005)
        for c in conns.values():
            c.close()

    def start(self) -> "App":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(30)

    def drop(self) -> None:
        for role in ("primary", "standby"):
            try:
                with self.d.conn(role) as c:
                    r.db("rethinkdb").table("users").get(self.user).delete().run(c)
            except r.errors.ReqlDriverError:
                pass


def ids_on(d: Deployment, role: str, table: str = "t") -> set:
    with d.conn(role) as c:
        return set(r.db(d.db).table(table)["id"].run(c))


def roles_on(d: Deployment, role: str) -> dict:
    with d.conn(role) as c:
        return r.db(d.state_db).table("roles").get(d.policy_name).run(c) or {}


def perms_of(d: Deployment, role: str, user: str) -> list:
    with d.conn(role) as c:
        rows = list(r.db("rethinkdb").table("permissions").filter({"user": user}).run(c))
    return sorted((row.get("database"), row.get("table"), row["permissions"]) for row in rows
                  if row.get("database") == d.db)


@pytest.fixture
def deployment(tmp_path, primary, standby):
    d = Deployment(tmp_path, primary.address, standby.address)
    d.policy_name = d.policy.read_text().split('"')[1]
    assert subprocess.run([sys.executable, "-m", "drtool", "keygen", "--out",
                           str(tmp_path / "id.txt")], capture_output=True).returncode == 0
    make_table(d, "t", 500)
    app = App(d)
    d.policy.write_text(d.policy.read_text() + app.section())
    d.app = app
    try:
        yield d
    finally:
        try:
            app.stop()
        finally:
            d.cleanup()
            app.drop()


def test_planned_failover_then_failback_with_a_writer(deployment: Deployment, tmp_path):
    d, app = deployment, deployment.app
    before = perms_of(d, "primary", app.user)
    d.start()
    d.streaming({"t"})
    app.start()
    wait_until(lambda: len(app.acked) > 50, "the application writing")
    done = drtool(d.policy, "failover", "--planned", "--yes", "--reverse")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "planned done: the standby is the primary (generation 1)" in done.stdout
    assert f"point the application at the standby: {d.standby}" in done.stdout
    wait_until(lambda: app.role == "standby" and len(app.acked) > 0, "the writer on the standby")
    n = len(app.acked)
    wait_until(lambda: len(app.acked) > n + 50, "writes acknowledged by the new primary")
    for role in ("primary", "standby"):
        got = roles_on(d, role)
        assert (got["generation"], got["primary"], got["step"]) == (1, "standby", None)
    acked = list(app.acked)  # before reading: the writer goes on, a later ack is not yet read
    on_new = ids_on(d, "standby")
    assert [i for i, _ in acked if i not in on_new] == []  # nothing acknowledged is lost
    with pytest.raises(r.errors.ReqlPermissionError):
        with app.conn("primary") as c:
            r.db(d.db).table("t").insert({"id": "late"}).run(c)
    # the runner replicates the other way now (--reverse): then fail back
    back = drtool(d.policy, "failback", "--yes", "--lost-writes", str(tmp_path / "lost.jsonl"))
    assert back.returncode == 0, back.stderr + back.stdout
    assert "failback done: the primary is the primary (generation 2)" in back.stdout
    wait_until(lambda: app.role == "primary", "the writer back on the primary")
    n = len(app.acked)
    wait_until(lambda: len(app.acked) > n + 50, "writes on the primary again")
    app.stop()
    on_primary = ids_on(d, "primary")
    assert [i for i, _ in app.acked if i not in on_primary] == []
    assert perms_of(d, "primary", app.user) == before  # permissions restored
    assert not (tmp_path / "lost.jsonl").exists()  # planned both ways: nothing was lost


@pytest.mark.parametrize("step", PLANNED)
def test_planned_failover_killed_after_each_step_finishes_when_run_again(deployment: Deployment, step):
    d = deployment
    d.start()
    d.streaming({"t"})
    env = {**os.environ, "DRTOOL_FAILPOINT": f"after-step:{step}"}
    killed = subprocess.run([sys.executable, "-m", "drtool", "-p", str(d.policy), "failover",
                             "--planned", "--yes"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    status = drtool(d.policy, "status", "--json")
    assert f"failover step {step}" in " ".join(json.loads(status.stdout)["problems"])
    again = drtool(d.policy, "failover", "--planned", "--yes")
    assert again.returncode == 0, again.stderr + again.stdout
    for role in ("primary", "standby"):
        got = roles_on(d, role)
        assert (got["generation"], got["primary"], got["step"]) == (1, "standby", None)
    assert ids_on(d, "primary") == ids_on(d, "standby")
    assert perms_of(d, "standby", d.app.user) == [(d.db, None, {"read": True, "write": True})]
    assert perms_of(d, "primary", d.app.user) == [(d.db, None, {"read": True, "write": False})]


def test_unplanned_refused_while_the_primary_answers(deployment: Deployment):
    done = drtool(deployment.policy, "failover", "--unplanned", "--yes")
    assert done.returncode == 7
    assert done.stderr.strip() == (f"drtool: error: the primary still answers (primary "
                                   f"{deployment.primary}): use drtool failover --planned, or "
                                   "--force to promote anyway (it is fenced first)")


@pytest.mark.skipif(not os.environ.get("DRTOOL_RETHINKDB_BIN"),
                    reason="set DRTOOL_RETHINKDB_BIN to start a throw-away primary server")
def test_unplanned_failover_after_kill9_then_failback_lists_the_lost_writes(tmp_path, standby):
    server = ThrowawayServer(tmp_path / "primary-data", "drtool_throwaway_primary").start()
    (tmp_path / "cfg").mkdir()
    d = Deployment(tmp_path / "cfg", server.address, standby.address)
    d.policy_name = d.policy.read_text().split('"')[1]
    assert subprocess.run([sys.executable, "-m", "drtool", "keygen", "--out",
                           str(tmp_path / "cfg" / "id.txt")], capture_output=True).returncode == 0
    app = None
    try:
        wait_until(server.answering, "the throw-away primary")
        make_table(d, "t", 500)
        app = App(d)
        d.policy.write_text(d.policy.read_text() + app.section())
        d.start()
        d.streaming({"t"})
        app.start()
        wait_until(lambda: len(app.acked) > 300, "the application writing")
        server.kill()  # -9
        started = time.time()
        seen = drtool(d.policy, "status", "--json")  # what the on-call operator looks at first
        assert seen.returncode == 3, seen.stderr
        view = json.loads(seen.stdout)
        assert list(view["unreachable"]) == ["primary"] and view["lag_seconds"] is None
        assert view["heartbeat_age_seconds"] is not None
        assert [t["table"] for t in view["tables"]] == [f"{d.db}.t"]
        done = drtool(d.policy, "failover", "--unplanned", "--yes", "--json")
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert (out["generation"], out["target"]) == (1, "standby")
        assert out["warnings"] == []
        with app.conn("standby") as c:  # the app user may write on the new primary
            assert r.db(d.db).table("t").insert({"id": "after"}).run(c)["inserted"] == 1
        wait_until(lambda: len(app.acked) > 0 and app.role == "standby", "the writer on the standby")
        time.sleep(1)
        app.stop()
        on_standby = ids_on(d, "standby")
        missing = [(i, t) for i, t in app.acked if i not in on_standby]
        heartbeat = out["loss"]["heartbeat"]
        assert heartbeat is not None and heartbeat <= started
        # the window reported covers every acknowledged write found missing
        assert [i for i, t in missing if t < heartbeat] == [], (missing, heartbeat)
        # the old primary returns; failback lists what only it had
        server.start()
        wait_until(server.answering, "the restarted primary")
        with d.conn() as c:  # after a restart tables need a moment before they are readable
            for db in (d.db, d.state_db):
                r.db(db).wait(wait_for="ready_for_writes", timeout=60).run(c)
        lost = tmp_path / "lost.jsonl"
        back = drtool(d.policy, "failback", "--yes", "--lost-writes", str(lost))
        assert back.returncode == 0, back.stderr + back.stdout
        listed = {json.loads(line)["key"] for line in lost.read_text().splitlines()} if lost.exists() else set()
        assert {i for i, _ in missing} <= listed
        assert ids_on(d, "primary") == ids_on(d, "standby")
        got = roles_on(d, "primary")
        assert (got["generation"], got["primary"], got["step"]) == (2, "primary", None)
    finally:
        if app is not None:
            app.stop()
        d.cleanup()
        if app is not None:
            app.drop()
        server.kill()


def all_perms_of(d: Deployment, role: str, user: str) -> list:
    with d.conn(role) as c:
        rows = list(r.db("rethinkdb").table("permissions").filter({"user": user}).run(c))
    return sorted(((row.get("database"), row.get("table"), row["permissions"]) for row in rows),
                  key=str)


def test_the_runner_keeps_users_and_permissions_on_the_standby(deployment: Deployment, tmp_path):
    """A user created on the primary appears on the standby with the password the policy
    names and the primary's global, database and table permissions (the app user's write
    fenced there); changes follow; a user dropped on the primary is dropped on the standby;
    a user without a password source is reported by drtool status."""
    d, app = deployment, deployment.app
    suffix = uuid.uuid4().hex[:8]
    reports, nopass = f"drtool_it_reports_{suffix}", f"drtool_it_nopass_{suffix}"
    password = "pw-" + uuid.uuid4().hex
    (tmp_path / "reports.pw").write_text(password + "\n")
    d.policy.write_text(d.policy.read_text() + f'[failover.users.{reports}]\n'
                        f'password_file = "{tmp_path / "reports.pw"}"\n')
    try:
        d.start()
        d.streaming({"t"})
        with d.conn() as c:
            for user in (reports, nopass):
                r.db("rethinkdb").table("users").insert({"id": user, "password": "other"}).run(c)
            r.grant(reports, {"connect": True}).run(c)
            r.db(d.db).grant(reports, {"read": True}).run(c)
            r.db(d.db).table("t").grant(reports, {"write": True}).run(c)
            r.db(d.db).grant(nopass, {"read": True}).run(c)
        wanted = all_perms_of(d, "primary", reports)
        assert len(wanted) == 3
        wait_until(lambda: all_perms_of(d, "standby", reports) == wanted,
                   "the user's permissions on the standby")
        host, _, port = d.standby.rpartition(":")
        with r.connect(host=host, port=int(port), user=reports, password=password) as c:
            assert r.db(d.db).table("t").insert({"id": "by-reports"}).run(c)["inserted"] == 1
        # the app user logs in on the standby but cannot write there before a promotion
        assert perms_of(d, "standby", app.user) == [(d.db, None, {"read": True, "write": False})]
        with app.conn("standby") as c, pytest.raises(r.errors.ReqlPermissionError):
            r.db(d.db).table("t").insert({"id": "stray"}).run(c)
        status = drtool(d.policy, "status", "--json")
        assert status.returncode == 1
        assert (f"user {nopass} has no password source in the policy ([failover.users."
                f"{nopass}]): not created on the target") in json.loads(status.stdout)["problems"]
        with d.conn("standby") as c:
            assert r.db("rethinkdb").table("users").get(nopass).run(c) is None
        # changed and revoked on the primary: followed; dropped: dropped
        with d.conn() as c:
            r.db(d.db).table("t").grant(reports, {"write": None}).run(c)
            r.db(d.db).grant(reports, {"read": False}).run(c)
        changed = [(None, None, {"connect": True}), (d.db, None, {"read": False})]
        wait_until(lambda: all_perms_of(d, "primary", reports) == sorted(changed, key=str)
                   == all_perms_of(d, "standby", reports), "the changes")
        with d.conn() as c:
            r.db("rethinkdb").table("users").get(reports).delete().run(c)
        with d.conn("standby") as c:
            wait_until(lambda: r.db("rethinkdb").table("users").get(reports).run(c) is None,
                       "the user dropped on the standby")
        assert d.proc.poll() is None, d.log.read_text()
        # logged after the drop returned: the line may follow the drop by a moment
        wait_until(lambda: f"user-dropped: user {reports} was dropped on the source"
                   in d.log.read_text(), "the drop logged")
    finally:
        for role in ("primary", "standby"):
            with d.conn(role) as c:
                r.db("rethinkdb").table("users").get_all(reports, nopass).delete().run(c)


def test_write_hook_fence_for_an_admin_application(tmp_path, primary, standby):
    """fence = "write-hook": the runner keeps every standby table refusing the application's
    writes (admin's too) with a message naming the policy and generation; the old primary
    refuses every write with a message naming the generation; the table's own hook is back on
    the new primary; after a failback the runner fences the standby again."""
    d = Deployment(tmp_path, primary.address, standby.address)
    d.policy_name = d.policy.read_text().split('"')[1]
    d.policy.write_text(d.policy.read_text() + '[failover]\napp_users = ["admin"]\n'
                        'fence = "write-hook"\nmax_lag = "10s"\n')
    try:
        make_table(d, "t", 200)
        with d.conn() as c:
            r.db(d.db).table("t").set_write_hook(lambda ctx, old, new: new.merge({"hooked": True})).run(c)
            own = r.db(d.db).table("t").get_write_hook().run(c)["query"]
        d.start()
        d.streaming({"t"})

        def standby_refusal(role: str, generation: int) -> str | None:
            with d.conn(role) as c:
                res = r.db(d.db).table("t").insert({"id": "stray"}).run(c)
            assert res["inserted"] == 0, res
            return res["first_error"] == (
                f"Error in write hook: drtool fence: this cluster is the standby of drtool "
                f"policy {d.policy_name} (generation {generation}); write to the primary")

        wait_until(lambda: standby_refusal("standby", 0), "the standby fenced by the runner")
        d.equal()  # the fence is not a difference
        done = drtool(d.policy, "failover", "--planned", "--yes")
        assert done.returncode == 0, done.stderr + done.stdout
        with d.conn("primary") as c:
            res = r.db(d.db).table("t").insert({"id": "late"}).run(c)
        assert res["errors"] == 1 and res["first_error"] == (
            "Error in write hook: drtool fence: this cluster is no longer the primary (failover "
            "to generation 1); write to the new primary")
        with d.conn("standby") as c:
            assert r.db(d.db).table("t").get_write_hook().run(c)["query"] == own
            assert r.db(d.db).table("t").insert({"id": "new"}).run(c)["inserted"] == 1
            assert r.db(d.db).table("t").get("new").run(c)["hooked"] is True
        assert ids_on(d, "primary") | {"new"} == ids_on(d, "standby")
        # back: the primary gets its own hook again, the waiting runner fences the standby
        back = drtool(d.policy, "failback", "--yes", "--lost-writes", str(tmp_path / "lost.jsonl"))
        assert back.returncode == 0, back.stderr + back.stdout
        with d.conn("primary") as c:
            assert r.db(d.db).table("t").get_write_hook().run(c)["query"] == own
            assert r.db(d.db).table("t").insert({"id": "back"}).run(c)["inserted"] == 1
        wait_until(lambda: standby_refusal("standby", 2), "the standby fenced at generation 2")
        wait_until(lambda: "back" in ids_on(d, "standby"), "replication primary -> standby")
        assert "stray" not in ids_on(d, "primary") | ids_on(d, "standby")
    finally:
        d.cleanup()
