"""Fencing, users/permissions sync and the lost-writes file, on the fake clusters (the real
servers run the same functions in tests/test_failover_real.py)."""

from __future__ import annotations

import json

import pytest

from drtool.cluster.fake import FakeServer
from drtool.errors import FailoverError, PermissionDenied, UsageError
from drtool.coordination.fence import FenceRecord, apply_fence, lift_fence, plan_fence
from drtool.failover.lost_writes import find_lost_writes, reapply_lost_writes
from drtool.coordination.users_sync import sync_users
from drtool.model import ClusterConfig, PermissionRow, TableName
from drtool.config.failover import FailoverPolicy, PasswordSource

T1, T2 = TableName("app", "orders"), TableName("app", "users")


async def setup(server: FakeServer, tables=(T1, T2)):
    admin = server.connect(ClusterConfig("primary", ("fake:1",)))
    for t in tables:
        await admin.ensure_db(t.db)
        await admin.create_table(t, primary_key="id", shards=1, replicas=1)
    return admin


def app_conn(server, user="app", password="pw"):
    return server.connect(ClusterConfig("primary", ("fake:1",), user=user, password=password))


async def test_permissions_fence_records_and_restores():
    server = FakeServer()
    admin = await setup(server)
    await admin.ensure_user("app", "pw")
    await admin.ensure_user("other", "pw2")
    await admin.grant("app", {"read": True, "write": True})
    await admin.grant("app", {"write": True}, db="app", table="users")  # would beat the db fence
    await admin.grant("other", {"write": True}, db="app")
    policy = FailoverPolicy(app_users=("app", "ghost"))
    record = await plan_fence(admin, policy, [T1, T2], generation=4)
    assert record.writes == [("app", "app", None, None), ("app", "app", "users", True)]
    assert record.warnings == [
        "app user ghost does not exist on primary fake:1",
        "user other can write app.orders, app.users but is not in [failover] app_users: it is not fenced"]
    assert FenceRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    app = app_conn(server)
    assert (await app.insert_texts(T1, ['{"id":1}'])).inserted == 1
    await apply_fence(admin, record)
    await apply_fence(admin, record)  # idempotent
    for t in (T1, T2):
        with pytest.raises(PermissionDenied, match="`write` permission"):
            await app.insert_texts(t, ['{"id":2}'])
    assert await lift_fence(admin, record) == []
    assert (await app.insert_texts(T2, ['{"id":2}'])).inserted == 1
    rows = [r for r in await admin.list_permissions() if r.user == "app"]
    assert rows == [PermissionRow("app", None, None, {"read": True, "write": True}),
                    PermissionRow("app", "app", "users", {"write": True})]


async def test_admin_needs_the_write_hook_fence():
    admin = await setup(FakeServer())
    with pytest.raises(FailoverError, match='fence = "write-hook"'):
        await plan_fence(admin, FailoverPolicy(app_users=("admin",)), [T1], 1)
    with pytest.raises(FailoverError, match="no table selected"):
        await plan_fence(admin, FailoverPolicy(app_users=("app",)), [], 1)


async def test_write_hook_fence_keeps_the_tables_own_hook():
    server = FakeServer()
    admin = await setup(server)
    own = FakeServer.hook_blob()
    await admin.set_write_hook(T1, own)
    record = await plan_fence(admin, FailoverPolicy(app_users=("admin",), fence="write-hook"),
                              [T1, T2], generation=9)
    assert record.hooks == [(str(T1), own), (str(T2), None)]
    await apply_fence(admin, record)
    res = await admin.insert_texts(T2, ['{"id":1}'])
    assert res.first_error == ("Error in write hook: drtool fence: this cluster is no longer the "
                               "primary (failover to generation 9); write to the new primary")
    assert (await admin.insert_texts(T2, ['{"id":1}'], ignore_write_hook=True)).inserted == 1
    await lift_fence(admin, record)
    assert (await admin.table_meta(T1)).write_hook == own
    assert (await admin.table_meta(T2)).write_hook is None


async def test_users_sync(monkeypatch):
    src, dst = FakeServer(), FakeServer()
    s, t = await setup(src), await setup(dst, (T1,))
    for user in ("app", "reports", "nopass"):
        await s.ensure_user(user, "x")
    await t.ensure_user("local", "y")
    await s.grant("app", {"read": True, "write": True})
    await s.grant("app", {"write": False}, db="app")
    await s.grant("reports", {"read": True}, db="app", table="users")  # T2 not on the target
    await s.grant("nopass", {"read": True}, db="app")
    await s.ensure_user("elsewhere", "z")  # no permission in a replicated database: not synced
    await s.grant("elsewhere", {"read": True}, db="app")
    await s.grant("elsewhere", {"read": None}, db="app")
    await t.grant("local", {"read": True}, db="app")
    monkeypatch.setenv("APP_PW_X", "app-secret")
    policy = FailoverPolicy(passwords={"app": PasswordSource(env="APP_PW_X"),
                                       "reports": PasswordSource(env="APP_PW_X")})
    report = await sync_users(s, t, policy, [T1, T2])
    assert (report.created, report.no_password, report.extra_users) == (
        ["app", "reports"], ["nopass"], ["local"])
    assert report.granted == ["app: global", "app: db app"]
    assert "elsewhere" not in dst.users
    assert report.pending == ["reports: table app.users"]
    assert dst.users["app"] == "app-secret"
    assert [r for r in await t.list_permissions() if r.user == "app"] == [
        PermissionRow("app", None, None, {"read": True, "write": True}),
        PermissionRow("app", "app", None, {"write": False})]
    # changed on the source: only the difference is written; extra overrides removed
    await s.grant("app", {"write": None}, db="app")
    await t.grant("app", {"config": True}, db="app")
    again = await sync_users(s, t, policy, [T1, T2])
    assert (again.created, again.granted) == ([], ["app: db app"])
    assert [r for r in await t.list_permissions() if r.user == "app"] == [
        PermissionRow("app", None, None, {"read": True, "write": True})]
    assert (await sync_users(s, t, policy, [T1, T2])).granted == []  # nothing left to do
    # a fenced target keeps its write override
    await t.grant("app", {"write": False}, db="app")
    kept = await sync_users(s, t, policy, [T1, T2], keep_fenced=frozenset({("app", "app", None)}))
    assert kept.granted == [] and dst.permissions[("app", "app", None)] == {"write": False}
    assert (await sync_users(s, t, policy, [T1, T2], refresh_passwords=True)).passwords_set == ["app", "reports"]


async def test_lost_writes_file_and_reapply(tmp_path):
    old_server, cur_server = FakeServer(), FakeServer()
    old, cur = await setup(old_server), await setup(cur_server)
    for c in (old, cur):
        await c.insert_texts(T1, ['{"id":1,"v":"same"}', '{"id":2,"v":"x"}'])
    await old.insert_texts(T1, ['{"id":3,"v":"only old","é":1.5}', '{"id":"s","n":1e300}'])
    await old.insert_texts(T1, ['{"id":2,"v":"old"}'], conflict="replace")
    await cur.insert_texts(T1, ['{"id":2,"v":"new"}', '{"id":4,"v":"only current"}'], conflict="replace")
    path = tmp_path / "lost" / "writes.jsonl"
    report = await find_lost_writes(old, cur, [T1, T2], path)
    assert (report.count, report.missing, report.changed) == (3, {"app.orders": 2}, {"app.orders": 1})
    assert path.read_text().splitlines() == [
        '{"current":{"id":2,"v":"new"},"doc":{"id":2,"v":"old"},"key":2,"kind":"changed","table":"app.orders"}',
        '{"current":null,"doc":{"id":3,"v":"only old","é":1.5},"key":3,"kind":"missing","table":"app.orders"}',
        '{"current":null,"doc":{"id":"s","n":1e300},"key":"s","kind":"missing","table":"app.orders"}',
    ]
    results = await reapply_lost_writes(cur, path)  # conflict=error: only the missing ones
    assert (results["app.orders"].inserted, results["app.orders"].errors) == (2, 1)
    assert await cur.get_docs(T1, ["3", '"s"', "2"]) == [
        ("2", '{"id":2,"v":"new"}'), ("3", '{"id":3,"v":"only old","é":1.5}'),
        ('"s"', '{"id":"s","n":1e300}')]
    await reapply_lost_writes(cur, path, conflict="replace")
    assert await cur.get_docs(T1, ["2"]) == [("2", '{"id":2,"v":"old"}')]
    nothing = await find_lost_writes(cur, cur, [T1], tmp_path / "none.jsonl")
    assert nothing.path is None and not (tmp_path / "none.jsonl").exists()


def test_a_bad_lost_writes_file_is_one_line(tmp_path):
    import asyncio

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"table":"app.orders","doc":{"id":1}}\nnot json\n')
    with pytest.raises(UsageError, match=rf"^{bad}: line 2: not a lost-writes line"):
        asyncio.run(reapply_lost_writes(FakeServer().connect(ClusterConfig("p", ("f:1",))), bad,
                                        dry_run=True))
    with pytest.raises(UsageError, match="cannot read the lost-writes file"):
        asyncio.run(reapply_lost_writes(FakeServer().connect(ClusterConfig("p", ("f:1",))),
                                        tmp_path / "missing.jsonl"))
