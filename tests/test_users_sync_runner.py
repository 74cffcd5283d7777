"""The runner keeps users and permissions the same on the standby (drtool.coordination.users_sync
through the runner's users_sync hook), on the fake clusters: users created on the primary
appear with the password the policy names (environment variable or file), permissions follow
(the app users' write stays fenced on the standby), revocations follow, dropped users are
dropped, users without a password source are reported by drtool status."""

from __future__ import annotations

import asyncio
import json

import pytest

from drtool.cluster.fake import FakeServer
from drtool.coordination.state import StateStore
from drtool.errors import AuthError, PermissionDenied
from drtool.coordination.users_sync import runner_users_sync
from drtool.model import ClusterConfig, TableName
from drtool.config.policy import load_policy
from drtool.standby.events import Events

from tests.conftest import Cli, connect_fake, load_table, write_policy
from tests.failover_helpers import APP_PASSWORD, APP_PASSWORD_ENV
from tests.replication_helpers import Background, replication_section, wait_until

T, OTHER = TableName("app", "orders"), TableName("app", "lines")
REPORTS_PASSWORD = "reports-file-pw"


class Recorded(Events):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, str]] = []

    def emit(self, event, message, **kw):
        self.lines.append((event, message))


@pytest.fixture
def policy(tmp_path, primary_server: FakeServer, standby_server: FakeServer, monkeypatch):
    monkeypatch.setenv(APP_PASSWORD_ENV, APP_PASSWORD)
    (tmp_path / "reports.pw").write_text(REPORTS_PASSWORD + "\n")
    primary_server.users["app"] = APP_PASSWORD
    primary_server.permissions[("app", None, None)] = {"read": True, "write": True}
    load_table(primary_server, str(T), ['{"id":%d}' % i for i in range(5)])
    load_table(primary_server, str(OTHER), ['{"id":1}'])
    section = (f'[failover]\napp_users = ["app"]\n[failover.users.app]\n'
               f'password_env = "{APP_PASSWORD_ENV}"\n[failover.users.reports]\n'
               f'password_file = "{tmp_path / "reports.pw"}"\n')
    return load_policy(write_policy(tmp_path, extra=replication_section() + section).path)


def runner_of(policy, events: Events | None = None) -> Background:
    bg = Background(policy, events)
    bg.runner.users_sync = runner_users_sync(policy.failover, policy.tables,
                                             policy.replication.state_db, policy.name,
                                             protected=("admin",), events=bg.runner.events)
    return bg


def perms(server: FakeServer, user: str) -> dict:
    return {k: v for k, v in server.permissions.items() if k[0] == user}


def login(server: FakeServer, user: str, password: str):
    return server.connect(ClusterConfig("standby", ("fake:1",), user=user, password=password))


def fenced(primary: dict) -> dict:
    """The app user's permissions as the standby keeps them: write False in the replicated
    database and in every table where the primary grants it."""
    out = {k: dict(v) for k, v in primary.items()}
    out[("app", "app", None)] = {**out.get(("app", "app", None), {}), "write": False}
    for k, v in out.items():
        if k[2] is not None and v.get("write"):
            v["write"] = False
    return out


async def test_users_created_on_the_primary_follow_with_their_password_and_permissions(
        policy, primary_server, standby_server):
    events = Recorded()
    async with runner_of(policy, events) as bg:
        await bg.streaming(2)
        # created while the runner runs: a password from a file, permissions of all scopes
        primary_server.users["reports"] = "the primary's own password"
        src = connect_fake(primary_server)
        await src.grant("reports", {"read": True, "connect": True})
        await src.grant("reports", {"read": True, "write": True}, db="app")
        await src.grant("reports", {"write": False}, db="app", table="orders")
        await src.grant("app", {"write": True}, db="app", table="lines")
        await wait_until(lambda: perms(standby_server, "reports") == perms(primary_server, "reports"),
                         "the reports user's permissions on the standby")
        await wait_until(lambda: perms(standby_server, "app") == fenced(perms(primary_server, "app")),
                         "the app user on the standby, fenced")
    assert standby_server.users["reports"] == REPORTS_PASSWORD  # from password_file
    assert standby_server.users["app"] == APP_PASSWORD  # from password_env
    assert perms(standby_server, "app") == {
        ("app", None, None): {"read": True, "write": True},
        ("app", "app", None): {"write": False},
        ("app", "app", "lines"): {"write": False}}
    # the standby accepts both logins; only reports may write there, the app is fenced
    reports = login(standby_server, "reports", REPORTS_PASSWORD)
    assert (await reports.insert_texts(OTHER, ['{"id":"r"}'])).inserted == 1
    app = login(standby_server, "app", APP_PASSWORD)
    for table in (T, OTHER):
        with pytest.raises(PermissionDenied, match="`write` permission"):
            await app.insert_texts(table, ['{"id":"stray"}'])
    with pytest.raises(AuthError):
        login(standby_server, "reports", "the primary's own password")
    assert ("user-created", "user reports created on the target with the password the "
            "policy names") in events.lines
    # the values a promotion restores are recorded on the standby
    from drtool.coordination.standby_fence import read_standby_fence

    record = await read_standby_fence(StateStore(connect_fake(standby_server),
                                                 policy.replication.state_db, policy.name))
    assert sorted(record.writes, key=str) == [("app", "app", "lines", True), ("app", "app", None, None)]


async def test_changed_and_revoked_permissions_follow(policy, primary_server, standby_server):
    primary_server.users["reports"] = "x"
    # a user the operator created on both clusters, without a password source in the policy
    primary_server.users["auditor"] = standby_server.users["auditor"] = "a"
    primary_server.permissions[("auditor", "app", None)] = {"read": True}
    src = connect_fake(primary_server)
    await src.grant("reports", {"read": True}, db="app")
    await src.grant("reports", {"write": True}, db="app", table="orders")
    async with runner_of(policy) as bg:
        await bg.streaming(2)
        await wait_until(lambda: perms(standby_server, "reports") == perms(primary_server, "reports")
                         and perms(standby_server, "auditor") == perms(primary_server, "auditor"),
                         "reports and auditor on the standby")
        await src.grant("reports", {"write": False}, db="app", table="orders")  # changed
        await src.grant("reports", {"config": True})  # a new global permission
        await wait_until(lambda: perms(standby_server, "reports") == {
            ("reports", None, None): {"config": True},
            ("reports", "app", None): {"read": True},
            ("reports", "app", "orders"): {"write": False}}, "the changed permissions")
        # every permission in the replicated database revoked: the user is still synced
        await src.grant("reports", {"write": None}, db="app", table="orders")
        await src.grant("reports", {"read": None}, db="app")
        await src.grant("reports", {"config": None})
        await src.grant("auditor", {"read": None}, db="app")
        await wait_until(lambda: perms(standby_server, "reports") == {}, "the revocations")
        await wait_until(lambda: perms(standby_server, "auditor") == {},
                         "the auditor's last permission revoked")
        # the app user's write, revoked on the primary, stays revoked (and fenced) there
        await src.grant("app", {"write": None})
        await wait_until(lambda: standby_server.permissions.get(("app", None, None)) == {"read": True},
                         "the app user's global write revoked")
    assert standby_server.permissions[("app", "app", None)] == {"write": False}
    assert {"reports", "auditor"} <= set(standby_server.users)  # revoking is not dropping


async def test_dropped_users_follow_the_standbys_own_users_stay(policy, primary_server,
                                                               standby_server):
    for user in ("reports", "gone-while-stopped"):
        primary_server.users[user] = "x"
        primary_server.permissions[(user, "app", None)] = {"read": True}
    # gone-while-stopped has a password source too (else it could not be created)
    text = policy.path.read_text() + ('[failover.users.gone-while-stopped]\n'
                                      f'password_env = "{APP_PASSWORD_ENV}"\n')
    policy.path.write_text(text)
    policy = load_policy(policy.path)
    standby_server.users["monitor"] = "m"  # the standby's own user, never on the primary
    standby_server.permissions[("monitor", "app", None)] = {"read": True}
    events = Recorded()
    async with runner_of(policy, events) as bg:
        await bg.streaming(2)
        await wait_until(lambda: "reports" in standby_server.users
                         and "gone-while-stopped" in standby_server.users, "both users created")
        await connect_fake(primary_server).drop_user("reports")
        await wait_until(lambda: "reports" not in standby_server.users, "reports dropped")
    assert perms(standby_server, "reports") == {}
    assert ("user-dropped", "user reports was dropped on the source: dropped on the target "
            "too") in events.lines
    # dropped while no runner ran: the next runner drops it (the list is on the standby)
    await connect_fake(primary_server).drop_user("gone-while-stopped")
    async with runner_of(policy) as bg:
        await bg.streaming(2)
        await wait_until(lambda: "gone-while-stopped" not in standby_server.users,
                         "the user dropped while no runner ran")
    assert standby_server.users["monitor"] == "m"
    assert perms(standby_server, "monitor") == {("monitor", "app", None): {"read": True}}
    assert "admin" in standby_server.users


def test_status_reports_a_user_without_a_password_source(policy, primary_server, standby_server):
    primary_server.users["nopass"] = "x"
    primary_server.permissions[("nopass", "app", None)] = {"read": True, "write": True}
    events = Recorded()

    async def replicate():
        async with runner_of(policy, events) as bg:
            await bg.streaming(2)
            await wait_until(lambda: "app" in standby_server.users, "the app user created")
            await wait_until(lambda: any(e == "users-problem" for e, _ in events.lines),
                             "the runner reporting the user")

    asyncio.run(replicate())
    assert "nopass" not in standby_server.users  # never created without a password
    problem = ("user nopass has no password source in the policy ([failover.users.nopass]): "
               "not created on the target")
    assert [m for e, m in events.lines if e == "users-problem"] == [problem]  # once
    cli = Cli(policy.path)
    text = cli("status")
    assert text.exit_code == 1 and f"problem: {problem}" in text.stdout.splitlines()
    as_json = cli("status", "--json")
    assert as_json.exit_code == 1
    found = json.loads(as_json.stdout)
    assert found["healthy"] is False and problem in found["problems"]
    # given a password source, the next runner creates it and status is quiet about it
    policy.path.write_text(policy.path.read_text() + '[failover.users.nopass]\n'
                           f'password_env = "{APP_PASSWORD_ENV}"\n')
    policy = load_policy(policy.path)

    async def again():
        async with runner_of(policy) as bg:
            await bg.streaming(2)
            await wait_until(lambda: "nopass" in standby_server.users, "nopass created")

    asyncio.run(again())
    assert standby_server.users["nopass"] == APP_PASSWORD
    assert "nopass" not in cli("status").stdout


async def test_users_are_not_dropped_when_the_source_lost_all_of_them():
    """A source that lost every user synced before is the wrong cluster (or was emptied):
    nothing is dropped, the problem is named."""
    from drtool.coordination.users_sync import sync_users
    from drtool.config.failover import FailoverPolicy

    src, dst = FakeServer(), FakeServer()
    for server in (src, dst):
        for user in ("a", "b"):
            server.users[user] = "x"
            server.permissions[(user, "app", None)] = {"read": True}
    s, t = connect_fake(src), connect_fake(dst)
    for c in (s, t):
        await c.ensure_db("app")
    first = await sync_users(s, t, FailoverPolicy(), [T])
    assert first.managed == ["a", "b"] and first.dropped == []
    for user in ("a", "b"):
        await s.drop_user(user)
    report = await sync_users(s, t, FailoverPolicy(), [T], managed=frozenset(first.managed))
    assert (report.dropped, report.not_dropped, report.managed) == ([], ["a", "b"], ["a", "b"])
    assert {"a", "b"} <= set(dst.users)
    assert report.problems == ["users a, b: gone from the source, but so is every user synced "
                               "before: not dropped on the target (is the source the right "
                               "cluster? drop them there by hand if they were really dropped)"]
    src.users["a"] = "x"  # one of them back: the other one was really dropped
    again = await sync_users(s, t, FailoverPolicy(), [T], managed=frozenset(report.managed))
    assert again.dropped == ["b"] and "b" not in dst.users
