"""Fencing: stop the application's writes on a cluster, recording what to restore.

Two kinds (policy ``[failover] fence``):

* ``permissions``: for every app user and every database holding a selected table, a
  database-scope override ``write: False``; table-scope overrides of that user that grant
  write in those databases (they would win over the database's) get ``write: False`` too.
  ``admin`` cannot be fenced this way (its permissions cannot be changed).
* ``write-hook``: every selected table gets a hook refusing every write, for every user
  including admin, with a message naming the generation; the table's own hook is kept.
  drtool's own writes (``ignore_write_hook``) still go through.

``plan_fence`` only reads, and returns a ``FenceRecord`` holding the values before the fence;
the caller stores it durably (drtool's roles) BEFORE ``apply_fence``, so that a run interrupted
anywhere can apply or lift the same fence again. ``apply_fence`` and ``lift_fence`` are
idempotent; ``lift_fence`` restores exactly the recorded values (None: no override, so the
broader grant applies again) and the recorded hooks.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from drtool.cluster.base import Cluster
from drtool.errors import FailoverError, NotFound
from drtool.model import TableName, effective_permission, overrides_of
from drtool.config.failover import FailoverPolicy

FENCE_MESSAGE = ("drtool fence: this cluster is no longer the primary (failover to generation "
                 "{generation}); write to the new primary")


@dataclass
class FenceRecord:
    """What a fence changed and the values before it (JSON through ``to_json``)."""

    kind: str  # "permissions" or "write-hook"
    generation: int  # the generation the fence's message names (the one being promoted)
    #: (user, db, table or None, write override before the fence: True/False/None)
    writes: list[tuple[str, str, str | None, bool | None]] = field(default_factory=list)
    #: (db.table, the table's own hook blob or None)
    hooks: list[tuple[str, bytes | None]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"kind": self.kind, "generation": self.generation,
                "writes": [list(w) for w in self.writes],
                "hooks": [[t, None if b is None else base64.b64encode(b).decode()]
                          for t, b in self.hooks],
                "warnings": self.warnings}

    @classmethod
    def from_json(cls, data: dict) -> "FenceRecord":
        return cls(data["kind"], int(data["generation"]),
                   [tuple(w) for w in data.get("writes", [])],  # type: ignore[misc]
                   [(t, None if b is None else base64.b64decode(b))
                    for t, b in data.get("hooks", [])],
                   list(data.get("warnings", [])))

    def describe(self) -> list[str]:
        """One line per change, for the printed plan."""
        if self.kind == "write-hook":
            return [f"write hook refusing every write on {t}" for t, _ in self.hooks]
        return [f"user {u}: write permission revoked in "
                + (f"table {d}.{t}" if t else f"database {d}") for u, d, t, _ in self.writes]


async def plan_fence(cluster: Cluster, policy: FailoverPolicy, tables: list[TableName],
                     generation: int) -> FenceRecord:
    """The fence of ``tables`` on ``cluster`` (reads only). Raises FailoverError when an app
    user is admin under the permissions fence, or no table is selected."""
    if not tables:
        raise FailoverError("no table selected to fence (check [tables] in the policy)")
    record = FenceRecord(policy.fence, generation)
    if policy.fence == "write-hook":
        for table in tables:
            record.hooks.append((str(table), (await cluster.table_meta(table)).write_hook))
        return record
    if "admin" in policy.app_users:
        raise FailoverError('app user "admin" cannot be fenced by permissions: set '
                            '[failover] fence = "write-hook"')
    users = {u.name for u in await cluster.list_users()}
    overrides = overrides_of(await cluster.list_permissions())
    dbs = sorted({t.db for t in tables})
    for user in policy.app_users:
        if user not in users:
            record.warnings.append(f"app user {user} does not exist on {cluster.description}")
            continue
        for db in dbs:
            record.writes.append((user, db, None, overrides.get((user, db, None), {}).get("write")))
        for (u, db, table), perms in sorted(overrides.items(), key=lambda i: str(i[0])):
            if u == user and table is not None and db in dbs and perms.get("write"):
                record.writes.append((user, db, table, True))
    others = sorted({u for (u, _, _) in overrides} - set(policy.app_users) - {"admin"})
    for user in others:
        writable = [t for t in tables
                    if effective_permission(overrides, user, "write", t.db, t.table)]
        if writable:
            record.warnings.append(
                f"user {user} can write {', '.join(map(str, writable[:3]))}"
                + (f" (+{len(writable) - 3} more)" if len(writable) > 3 else "")
                + " but is not in [failover] app_users: it is not fenced")
    return record


async def apply_fence(cluster: Cluster, record: FenceRecord) -> None:
    """Put the fence in place (idempotent)."""
    message = FENCE_MESSAGE.format(generation=record.generation)
    for user, db, table, _ in record.writes:
        await cluster.grant(user, {"write": False}, db=db, table=table)
    for table, _ in record.hooks:
        await cluster.set_rejecting_write_hook(TableName.parse(table), message)


async def lift_fence(cluster: Cluster, record: FenceRecord) -> list[str]:
    """Restore what the fence changed to the recorded values (idempotent); also used on the
    new primary, where the runner may have copied the fence. Returns what could not be
    restored (a user, database or table missing on ``cluster``), one line each."""
    skipped = []
    for user, db, table, previous in record.writes:
        try:
            await cluster.grant(user, {"write": previous}, db=db, table=table)
        except NotFound as err:
            skipped.append(f"user {user} in {db}{'.' + table if table else ''}: {err}")
    for table, blob in record.hooks:
        try:
            await cluster.set_write_hook(TableName.parse(table), blob)
        except NotFound as err:
            skipped.append(f"write hook of {table}: {err}")
    return skipped
