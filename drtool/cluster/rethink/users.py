"""Users, permissions and the write-hook fence on a real server (a mixin of RethinkCluster).

Behaviour observed on RethinkDB 2.4.4 (recorded in the contract suite): ``rethinkdb.users``
rows are ``{'id': name, 'password': True|False}`` (never the password); ``rethinkdb.permissions``
rows are ``{'user', 'id': [user, db uuid?, table uuid?], 'database'?, 'table'?, 'permissions'}``;
``grant`` returns ``{'granted': 1, 'permissions_changes': [{'old_val', 'new_val'}]}``; the
permissions of ``admin`` cannot be modified; a write refused by a hook comes back in the write
result as ``Error in write hook: <message>``.
"""

from __future__ import annotations

from typing import Any

from drtool.cluster.rethink import util
from drtool.errors import ClusterError, DrtoolError
from drtool.model import PermissionRow, TableName, UserInfo


class RethinkUsersMixin:
    """Implements the users/permissions/fence part of drtool.cluster.base.Cluster."""

    _r: Any
    _session: Any

    def _system(self, name: str) -> Any:
        return self._r.db("rethinkdb").table(name)

    async def set_rejecting_write_hook(self, table: TableName, message: str) -> None:
        r = self._r
        hook = lambda _ctx, _old, _new: r.error(message)  # noqa: E731 - a ReQL function
        await self._session.fetch(self._table(table).set_write_hook(hook), table)  # type: ignore[attr-defined]
        self._no_bypass.discard(table)  # type: ignore[attr-defined]

    async def list_users(self) -> list[UserInfo]:
        rows = await self._session.fetch(self._system("users"))
        return sorted((UserInfo(row["id"], bool(row.get("password"))) for row in rows),
                      key=lambda u: u.name)

    async def list_permissions(self) -> list[PermissionRow]:
        rows = await self._session.fetch(self._system("permissions"))
        out = [PermissionRow(row["user"], row.get("database"), row.get("table"),
                             dict(row.get("permissions") or {})) for row in rows]
        return sorted(out, key=PermissionRow.sort_key)

    async def grant(self, user: str, permissions: dict[str, bool | None], *,
                    db: str | None = None, table: str | None = None
                    ) -> tuple[dict | None, dict | None]:
        r = self._r
        if table is not None and db is None:
            raise ClusterError("grant: a table scope needs its database")
        term = r if db is None else r.db(db) if table is None else r.db(db).table(table)
        where = None if db is None else TableName(db, table or "*")
        result = await self._session.fetch(term.grant(user, dict(permissions)), where)
        changes = (result or {}).get("permissions_changes") or [{}]
        return changes[0].get("old_val"), changes[0].get("new_val")

    async def ensure_user(self, user: str, password: str) -> bool:
        users = self._system("users")
        try:
            existing = await self._session.fetch(users.get(user))
            query = (users.insert({"id": user, "password": password}) if existing is None
                     else users.get(user).update({"password": password}))
            result = util.write_result(await self._session.fetch(query),
                                       f"{self.description} user {user}")  # type: ignore[attr-defined]
        except DrtoolError as err:  # belt and braces: the server never echoes the password
            raise type(err)(util.scrub(str(err), password)) from None
        if result.errors:
            raise ClusterError(f"{self.description}: setting user {user!r} failed: "  # type: ignore[attr-defined]
                               f"{util.scrub(result.first_error or '', password)}")
        return existing is None

    async def drop_user(self, user: str) -> None:
        await self._session.fetch(self._system("users").get(user).delete())
