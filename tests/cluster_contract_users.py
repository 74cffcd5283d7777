"""Cluster contract, users: users, permission rows and the two write fences.

Part of the contract suite (``tests.cluster_contract``), run against the fake and a real
server (observed on RethinkDB 2.4.4): permission overrides per scope as rows, the write
permission fence (and that ``ignore_write_hook`` needs ``config``), reading users needs the
``rethinkdb`` database, and a rejecting write hook refuses even admin's writes.
"""

from __future__ import annotations

import uuid

import pytest

from drtool.cluster.base import Cluster
from drtool.compare.shape import is_drtool_fence
from drtool.errors import ClusterError, NotFound, PermissionDenied
from drtool.model import PermissionRow, UserInfo

from tests.cluster_contract_target import ContractTarget


class UsersContract:
    """Users, permissions, fences: every test takes the ``cluster`` fixture (a ContractTarget)."""

    async def test_users_and_permission_rows(self, cluster: ContractTarget):
        c, user = cluster.cluster, "drtool_test_u_" + uuid.uuid4().hex[:8]
        t = await cluster.new_table()
        try:
            assert await c.ensure_user(user, "pw-1") is True
            assert await c.ensure_user(user, "pw-2") is False  # existing: password set again
            users = await c.list_users()
            assert UserInfo(user, True) in users and UserInfo("admin", False) in users
            assert [u.name for u in users] == sorted(u.name for u in users)
            assert await c.grant(user, {"read": True, "write": True}) == (
                None, {"read": True, "write": True})
            assert await c.grant(user, {"write": False}, db=cluster.db) == (None, {"write": False})
            assert await c.grant(user, {"write": True, "config": False}, db=t.db, table=t.table) == (
                None, {"config": False, "write": True})
            mine = [row for row in await c.list_permissions() if row.user == user]
            assert mine == [PermissionRow(user, None, None, {"read": True, "write": True}),
                            PermissionRow(user, cluster.db, None, {"write": False}),
                            PermissionRow(user, t.db, t.table, {"config": False, "write": True})]
            # None removes one override; a row without overrides disappears
            assert await c.grant(user, {"config": None}, db=t.db, table=t.table) == (
                {"config": False, "write": True}, {"write": True})
            assert await c.grant(user, {"write": None}, db=t.db, table=t.table) == (
                {"write": True}, None)
            assert await c.grant(user, {"write": None}, db=t.db, table=t.table) == (None, None)
            assert len([r for r in await c.list_permissions() if r.user == user]) == 2
            with pytest.raises(ClusterError, match="admin"):
                await c.grant("admin", {"write": False}, db=cluster.db)
            with pytest.raises(NotFound, match="not found"):
                await c.grant(user + "_nobody", {"write": False}, db=cluster.db)
        finally:
            await c.drop_user(user)
        assert user not in [u.name for u in await c.list_users()]
        assert [r for r in await c.list_permissions() if r.user == user] == []
        await c.drop_user(user)  # missing: not an error

    async def _app_user(self, cluster: ContractTarget, perms: dict) -> tuple[str, Cluster]:
        user, password = "drtool_test_u_" + uuid.uuid4().hex[:8], "pw-" + uuid.uuid4().hex[:6]
        await cluster.cluster.ensure_user(user, password)
        await cluster.cluster.grant(user, perms)
        return user, await cluster.connect_as(user, password)

    async def test_write_permission_fence(self, cluster: ContractTarget):
        c = cluster.cluster
        t = await cluster.new_table()
        user, app = await self._app_user(cluster, {"read": True, "write": True})
        try:
            assert (await app.insert_texts(t, ['{"id":1}'])).inserted == 1
            assert await c.grant(user, {"write": False}, db=t.db) == (None, {"write": False})
            with pytest.raises(PermissionDenied,
                               match=f"User `{user}` does not have the required `write` permission"):
                await app.insert_texts(t, ['{"id":2}'])
            with pytest.raises(PermissionDenied):
                await app.delete_keys(t, ["1"])
            await c.grant(user, {"write": None}, db=t.db)  # unfence: the global grant applies again
            assert (await app.insert_texts(t, ['{"id":2}'])).inserted == 1
            # writing with ignore_write_hook needs the config permission (so does reading the
            # hook): refused, whether the table has a hook or not
            with pytest.raises(PermissionDenied, match="`config` permission"):
                await app.insert_texts(t, ['{"id":3}'], ignore_write_hook=True)
        finally:
            await app.close()
            await c.drop_user(user)

    async def test_reading_users_needs_the_rethinkdb_database(self, cluster: ContractTarget):
        user, app = await self._app_user(cluster, {"read": True, "write": True})
        try:
            with pytest.raises(PermissionDenied, match="`read` permission"):
                await app.list_users()
            with pytest.raises(PermissionDenied):
                await app.list_permissions()
        finally:
            await app.close()
            await cluster.cluster.drop_user(user)

    async def test_rejecting_write_hook_fence(self, cluster: ContractTarget):
        c = cluster.cluster
        t = await cluster.new_table()
        await c.insert_texts(t, ['{"id":1}'])
        message = "drtool fence: generation 7 is on the standby"
        await c.set_rejecting_write_hook(t, message)
        blob = (await c.table_meta(t)).write_hook
        # drtool recognises its fences by the message, which the blob carries as text
        assert is_drtool_fence(blob) and is_drtool_fence(blob, message)
        assert not is_drtool_fence(blob, message + " now")
        refused = "Error in write hook: " + message
        res = await c.insert_texts(t, ['{"id":2}'])  # even admin is refused
        assert (res.inserted, res.errors, res.first_error) == (0, 1, refused)
        res = await c.insert_texts(t, ['{"id":1,"v":1}'], conflict="replace")
        assert (res.replaced, res.errors, res.first_error) == (0, 1, refused)
        res = await c.delete_keys(t, ["1"])
        assert (res.deleted, res.errors, res.first_error) == (0, 1, refused)
        assert (await c.insert_texts(t, ['{"id":3}'], ignore_write_hook=True)).inserted == 1
        assert (await c.delete_keys(t, ["3"], ignore_write_hook=True)).deleted == 1
        await c.set_rejecting_write_hook(t, "drtool fence: déjà fenced")
        assert is_drtool_fence((await c.table_meta(t)).write_hook, "drtool fence: déjà fenced")
        await c.set_write_hook(t, None)
        assert (await c.insert_texts(t, ['{"id":2}'])).inserted == 1
        assert not is_drtool_fence((await c.table_meta(t)).write_hook)
