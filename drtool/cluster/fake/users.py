"""Users, permissions and the write-hook fence of the fake cluster (a mixin of FakeCluster).

Follows the real server (see drtool.cluster.rethink.users and the contract suite): users are
``FakeServer.users`` (name -> password, "" for none), overrides are ``FakeServer.permissions``
(``(user, db or None, table or None) -> {key: bool}``); a non-admin user may write a table when
the nearest override of ``write`` (table, then database, then global) is True, and needs
``config`` to write with ``ignore_write_hook``; the system tables are readable only with a read
override on the ``rethinkdb`` database itself. A rejecting hook is a blob the fake recognises
(``rejecting_hook_blob``) and refuses writes with the server's message.
"""

from __future__ import annotations

import json
import re

from drtool.cluster.fake.schema import HOOK_PREFIX
from drtool.errors import ClusterError, NotFound, PermissionDenied
from drtool.model import PERMISSION_KEYS, PermissionRow, TableName, UserInfo, effective_permission

ADMIN = "admin"
ADMIN_ROWS = {(ADMIN, None, None): {"config": True, "connect": True, "read": True, "write": True},
              (ADMIN, "rethinkdb", None): {"config": True, "read": True, "write": True}}
_REJECT = re.compile(rb"^function\(var1, var2, var3\) \{ return r\.error\((\".*\")\); \}$", re.S)


def rejecting_hook_blob(message: str) -> bytes:
    """The blob of a hook refusing every write with ``message`` (shaped like the server's
    query text ``setWriteHook(function(var1, var2, var3) { return r.error("..."); })``)."""
    text = f"function(var1, var2, var3) {{ return r.error({json.dumps(message)}); }}"
    return HOOK_PREFIX + text.encode()


def hook_refusal(blob: bytes | None) -> str | None:
    """The first_error a write through this hook gets, or None when the hook lets it pass."""
    if blob is None:
        return None
    found = _REJECT.match(blob[len(HOOK_PREFIX):])
    return None if found is None else "Error in write hook: " + json.loads(found.group(1))


class FakeUsersMixin:
    """Implements the users/permissions/fence part of drtool.cluster.base.Cluster. Needs: the
    host (FakeCluster) provides ``server``, ``description``, ``user`` (who is connected),
    ``_check(method)`` and ``_table(name)``."""

    def _require(self, key: str, table: TableName) -> None:
        perms = self.server.permissions
        if not effective_permission(perms, self.user, key, table.db, table.table):
            raise PermissionDenied(f"{self.description} table {table}: permission denied: User "
                                   f"`{self.user}` does not have the required `{key}` permission.")

    def _may_write(self, table: TableName, ignore_write_hook: bool) -> None:
        self._require("write", table)
        if ignore_write_hook:
            self._require("config", table)

    def _system_read(self) -> None:
        row = self.server.permissions.get((self.user, "rethinkdb", None), {})
        if self.user != ADMIN and not row.get("read"):  # a global grant does not count
            raise PermissionDenied(f"{self.description}: permission denied: User `{self.user}` "
                                   "does not have the required `read` permission.")

    async def set_rejecting_write_hook(self, table: TableName, message: str) -> None:
        self._check("set_rejecting_write_hook")
        self._table(table).write_hook = rejecting_hook_blob(message)

    async def list_users(self) -> list[UserInfo]:
        self._check("list_users")
        self._system_read()
        return [UserInfo(name, bool(pw)) for name, pw in sorted(self.server.users.items())]

    async def list_permissions(self) -> list[PermissionRow]:
        self._check("list_permissions")
        self._system_read()
        rows = [PermissionRow(u, d, t, dict(p)) for (u, d, t), p in self.server.permissions.items()]
        return sorted(rows, key=PermissionRow.sort_key)

    async def grant(self, user: str, permissions: dict[str, bool | None], *,
                    db: str | None = None, table: str | None = None
                    ) -> tuple[dict | None, dict | None]:
        self._check("grant")
        if table is not None and db is None:
            raise ClusterError("grant: a table scope needs its database")
        if db is not None and db not in self.server.dbs:
            raise NotFound(f"{self.description}: Database `{db}` does not exist.")
        if table is not None:
            self._table(TableName(db, table))
        if user == ADMIN:
            raise ClusterError(f"{self.description}: the server refused the query: The "
                               "permissions of the user `admin` can't be modified.")
        if user not in self.server.users:
            raise NotFound(f"{self.description}: User `{user}` not found.")
        allowed = PERMISSION_KEYS if db is None else PERMISSION_KEYS[:3]
        for key, value in permissions.items():
            if key not in allowed or not (value is None or isinstance(value, bool)):
                raise ClusterError(f"{self.description}: the server refused the query: "
                                   f"Unexpected permission `{key}`.")
        scope = (user, db, table)
        old = self.server.permissions.get(scope)
        new = dict(old or {})
        for key, value in permissions.items():
            if value is None:
                new.pop(key, None)
            else:
                new[key] = value
        if new:
            self.server.permissions[scope] = new
        else:
            self.server.permissions.pop(scope, None)
        return (dict(old) if old else None), (dict(new) if new else None)

    async def ensure_user(self, user: str, password: str) -> bool:
        self._check("ensure_user")
        self._system_read()
        created = user not in self.server.users
        self.server.users[user] = password
        return created

    async def drop_user(self, user: str) -> None:
        self._check("drop_user")
        self._system_read()
        self.server.users.pop(user, None)
        for scope in [s for s in self.server.permissions if s[0] == user]:
            del self.server.permissions[scope]
