"""Keeping users and permissions the same on the other cluster (the runner calls
``sync_users`` on every schema poll; failover calls it once more before promoting).

Which users: the users of the replicated data (the app users, the users with a password
source, and every user with a permission in a replicated database on either cluster: one
whose last permission there was revoked on the source loses it on the target too); which
permissions: their global rows and their rows of the replicated databases and tables. (Users
of databases the policy does not replicate are none of the standby's business.)

Users: every such user of the source except admin exists on the target. Passwords cannot be read
from RethinkDB: a user missing on the target is created with the password the policy names
(``[failover.users.NAME]``); a user without a password source is reported and not created
(creating it without a password would let anyone log in as it). ``refresh_passwords`` sets
the password of every user that has a source (the runner does this once when it starts).
A user that was on both and is dropped on the source is dropped on the target (it must not
log in after a failover; the runner keeps the list of such users in the target's state
database); users only ever on the target are reported, never dropped.

Permissions: for every such user on both clusters except admin, the target's global, database and
table overrides are made equal to the source's (extra overrides removed); only rows that
differ are written. Rows for a database or table the target does not have yet are reported
as pending (the runner copies the table first). The app users stay fenced on the target
(``fence_users``: no application write can land on a standby, where replication would
overwrite or delete it). ``keep_fenced``: ``(user, db, table)`` scopes
whose ``write`` is left alone on the target (a fenced old primary stays fenced).
Idempotent; a second run with nothing changed writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drtool.cluster.base import Cluster
from drtool.errors import NotFound
from drtool.coordination.fence import FenceRecord
from drtool.coordination.standby_fence import (
    read_synced_users, store_standby_fence, store_synced_users,
)
from drtool.model import PERMISSION_KEYS, PermissionRow, TableName
from drtool.config.failover import FailoverPolicy

Scope = tuple[str, str | None, str | None]


@dataclass
class UsersSync:
    """What ``sync_users`` did and what it could not do."""

    created: list[str] = field(default_factory=list)
    passwords_set: list[str] = field(default_factory=list)
    no_password: list[str] = field(default_factory=list)  # missing on target, no source
    unmanaged_passwords: list[str] = field(default_factory=list)  # exist, no source
    extra_users: list[str] = field(default_factory=list)  # only on the target, never synced
    dropped: list[str] = field(default_factory=list)  # managed, gone from the source: dropped
    not_dropped: list[str] = field(default_factory=list)  # every managed user gone at once
    managed: list[str] = field(default_factory=list)  # on both after this run
    granted: list[str] = field(default_factory=list)  # scopes written, "user: scope"
    pending: list[str] = field(default_factory=list)  # db/table not on the target yet
    #: (user, db, table or None, the source's write) of the app users fenced on the target
    standby_fence: list[tuple[str, str, str | None, bool | None]] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """One line per thing an operator should fix (for ``status`` and the failover plan)."""
        return ([f"user {u} has no password source in the policy ([failover.users.{u}]): "
                 "not created on the target" for u in self.no_password]
                + [f"permissions of {p}: the target has no such database or table yet"
                   for p in self.pending]
                + [f"users {', '.join(self.not_dropped)}: gone from the source, but so is every "
                   "user synced before: not dropped on the target (is the source the right "
                   "cluster? drop them there by hand if they were really dropped)"
                   ] * bool(self.not_dropped))

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in (
            "created", "passwords_set", "no_password", "unmanaged_passwords", "extra_users",
            "dropped", "not_dropped", "managed", "granted", "pending", "standby_fence")}


def _scope_text(row: PermissionRow) -> str:
    return f"{row.user}: {row.scope}"


def _in_scope(row: PermissionRow, dbs: set[str], tables: set[tuple[str, str]]) -> bool:
    """Global rows, and rows of the replicated databases and tables."""
    if row.db is None:
        return True
    return row.db in dbs if row.table is None else (row.db, row.table) in tables


async def sync_users(source: Cluster, target: Cluster, policy: FailoverPolicy,
                     selected: list[TableName], *, refresh_passwords: bool = False,
                     keep_fenced: frozenset[Scope] = frozenset(), dry_run: bool = False,
                     fence_users: tuple[str, ...] = (), managed: frozenset[str] = frozenset(),
                     protected: frozenset[str] = frozenset()) -> UsersSync:
    """Make the target's users and permissions equal to the source's (see the module doc)
    for the users of the replicated data: the app users, the users with a password source,
    and every user with a permission in a database of ``selected`` (the tables replicated).
    Only global rows and rows of those databases and tables are compared. Needs the admin
    user on both; raises PermissionDenied otherwise, and PolicyError when a named password
    source cannot be read. ``dry_run``: report only (no password is read, nothing written).

    ``fence_users`` (the app users, with the permissions fence): on the target their
    ``write`` is False in every replicated database and in every replicated table where the
    source grants it, so that the application cannot write into the standby (such writes
    would be overwritten or deleted by replication); ``report.standby_fence`` records the
    source's values there, which promotion restores.

    ``managed`` (the ``report.managed`` of the previous run: the users that were on both
    clusters): those gone from the source are dropped on the target (``report.dropped``),
    except admin and ``protected`` (the users drtool itself connects as): a user dropped on
    the primary must not be able to log in after a failover. When several are gone and none
    of them is left on the source (a wrong or emptied source cluster, not drops), none is
    dropped (``report.not_dropped``, a problem). Users the target has and the
    source never had are only reported (``extra_users``): they are the standby's own."""
    report = UsersSync()
    dbs = {t.db for t in selected}
    tables = {(t.db, t.table) for t in selected}
    s_rows = [r for r in await source.list_permissions() if r.user != "admin"]
    t_rows = [r for r in await target.list_permissions() if r.user != "admin"]
    # a user whose last permission in a replicated database was revoked on the source is
    # still one of them (its rows on the target must go too)
    relevant = ({r.user for r in s_rows + t_rows if r.db in dbs}
                | set(policy.app_users) | set(policy.passwords))
    s_all = {u.name for u in await source.list_users()}
    t_all = {u.name for u in await target.list_users()}
    s_users = s_all & relevant
    gone = sorted((set(managed) & t_all) - s_all - set(protected) - {"admin"})
    if len(gone) > 1 and not set(managed) & s_all:  # a wrong or empty source, not drops
        report.not_dropped, gone = gone, []
    for user in gone:
        if not dry_run:
            await target.drop_user(user)
        report.dropped.append(user)
    t_all -= set(gone)
    t_users = t_all & relevant
    report.extra_users = sorted(t_users - s_all - {"admin"})
    for user in sorted(s_users - {"admin"}):
        exists = user in t_users
        if exists and not refresh_passwords:
            continue
        if dry_run:
            if user not in policy.passwords:
                (report.unmanaged_passwords if exists else report.no_password).append(user)
            elif not exists:
                report.created.append(user)
            continue
        password = policy.password(user)
        if password is None:
            (report.unmanaged_passwords if exists else report.no_password).append(user)
            continue
        if await target.ensure_user(user, password):
            report.created.append(user)
        else:
            report.passwords_set.append(user)
    present = ((s_users & t_users) | set(report.created)) - {"admin"}
    report.managed = sorted(present | set(report.not_dropped))
    want = {(r.user, r.db, r.table): r for r in s_rows
            if r.user in present and _in_scope(r, dbs, tables)}
    for user in sorted(set(fence_users) & present):
        for db in sorted(dbs):
            row = want.get((user, db, None))
            previous = None if row is None else row.permissions.get("write")
            report.standby_fence.append((user, db, None, previous))
            want[(user, db, None)] = PermissionRow(user, db, None, {
                **(row.permissions if row else {}), "write": False})
        for (u, db, table), row in sorted(want.items(), key=lambda i: str(i[0])):
            if u == user and table is not None and row.permissions.get("write"):
                report.standby_fence.append((user, db, table, True))
                want[(u, db, table)] = PermissionRow(u, db, table, {**row.permissions, "write": False})
    have = {(r.user, r.db, r.table): r for r in t_rows
            if r.user in present and _in_scope(r, dbs, tables)}
    for scope in sorted(set(want) | set(have), key=lambda s: (s[0], s[1] or "", s[2] or "")):
        wanted = dict(want[scope].permissions) if scope in want else {}
        current = dict(have[scope].permissions) if scope in have else {}
        if scope in keep_fenced:
            wanted["write"] = current.get("write")
            if wanted["write"] is None:
                wanted.pop("write")
        if wanted == current:
            continue
        keys = PERMISSION_KEYS if scope[1] is None else PERMISSION_KEYS[:3]
        change = {k: wanted.get(k) for k in keys if wanted.get(k) != current.get(k)}
        row = want.get(scope) or have[scope]
        if dry_run:
            report.granted.append(_scope_text(row))
            continue
        try:
            await target.grant(scope[0], change, db=scope[1], table=scope[2])
        except NotFound:
            report.pending.append(_scope_text(row))
            continue
        report.granted.append(_scope_text(row))
    return report


def standby_fence_users(policy) -> tuple[str, ...]:
    """The users the standby keeps fenced: the app users, with the permissions fence."""
    return policy.app_users if policy.fence == "permissions" else ()


def runner_users_sync(policy, tables_policy, state_db: str, policy_name: str, *,
                      protected: tuple[str, ...] = (), events=None):
    """The ``users_sync(source, target)`` hook of drtool.standby.runner.Runner: passwords set
    on its first call, then only what changed; the app users stay fenced on the target (and
    the values to restore are recorded there); the write permissions a fence recorded on the
    target (``roles.extra["fenced"]``) are kept, so a fenced old primary stays fenced. The
    users on both clusters are recorded on the target, so that a user dropped on the source
    is dropped there too (even when that happened while no runner ran), except ``protected``
    (the users drtool connects as). ``events`` (drtool.standby.events.Events): users created
    or dropped and users without a password source are logged."""
    from drtool.coordination.state import StateStore

    first = [True]
    reported: set[str] = set()

    async def hook(source: Cluster, target: Cluster) -> None:
        store = StateStore(target, state_db, policy_name)
        roles = await store.read_roles()
        fenced = roles.extra.get("fenced") or {}
        records = [(roles.extra.get("failover") or {}).get("target_fence")]
        if roles.primary != fenced.get("cluster"):  # the target is the fenced cluster
            records.append(fenced.get("fence"))
        kept = frozenset((u, d, t) for r in records if r
                         for u, d, t, _ in FenceRecord.from_json(r).writes)
        selected = tables_policy.selected(await source.list_tables())
        report = await sync_users(source, target, policy, selected, refresh_passwords=first[0],
                                  keep_fenced=kept, fence_users=standby_fence_users(policy),
                                  managed=await read_synced_users(store),
                                  protected=frozenset(protected) | {"admin"})
        await store_synced_users(store, report.managed)
        if report.standby_fence and not roles.step:
            await store_standby_fence(store, FenceRecord(
                "permissions", 0, [tuple(w) for w in report.standby_fence]))  # type: ignore[misc]
        first[0] = False
        if events is not None:
            _log(events, report, reported)

    return hook


def _log(events, report: UsersSync, reported: set[str]) -> None:
    for user in report.created:
        events.emit("user-created", f"user {user} created on the target with the password "
                    "the policy names", user=user)
    for user in report.dropped:
        events.warn("user-dropped", f"user {user} was dropped on the source: dropped on the "
                    "target too", user=user)
    # once per problem, not on every poll (pending permissions are not logged: they wait
    # for the runner to create the database or table)
    problems = UsersSync(no_password=report.no_password, not_dropped=report.not_dropped).problems
    for problem in problems:
        if problem not in reported:
            events.warn("users-problem", problem)
    reported.clear()
    reported.update(problems)


async def users_problems(source: Cluster, target: Cluster, policy) -> list[str]:
    """What ``drtool status`` reports about users on the target (read only): users without a
    password source that a failover would leave unable to log in, or why it cannot tell."""
    from drtool.errors import DrtoolError

    try:
        selected = policy.tables.selected(await source.list_tables())
        report = await sync_users(source, target, policy.failover, selected, dry_run=True)
    except DrtoolError as err:
        return [f"users and permissions: cannot compare them: {err}"]
    return report.problems
