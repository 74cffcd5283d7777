"""What ``drtool status`` shows: read from the clusters' state databases and the repository,
so it works whether or not a runner is running.

Healthy means: both clusters answer, a heartbeat is visible on the replication target, the
lag is at most ``[replication] lag_threshold``, no table is in the ``error`` state and every
selected table can be read on both clusters now (a table with a shard on a server that is down
is named with the server's reason, whatever the state tables say: they may be down too).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from drtool.cluster import Connector
from drtool.cluster.base import Cluster
from drtool.changelog.status import archive_status
from drtool.wiring.open import connect_role, open_repository
from drtool.coordination.state import (
    HEARTBEAT, LEASES, ROLES, RUNNER, TABLES, Heartbeat, Lease, Roles, TableState, lag_seconds,
    newest_roles, runner_lease, spare_lease, state_store, table_lease,
)
from drtool.coordination.roles import member_lease, policy_leases
from drtool.errors import ClusterError, ClusterUnreachable, DrtoolError, NotFound, UsageError
from drtool.compare.diff import table_meta_or_none
from drtool.compare.shape import is_drtool_fence
from drtool.coordination.users_sync import users_problems
from drtool.config.policy import Policy
from drtool.util.tasks import gather_bounded

T = TypeVar("T")


@dataclass
class StandbyStatus:
    policy: str
    roles: Roles
    threshold: float
    lag: float | None = None
    heartbeat: Heartbeat | None = None
    lease: Lease | None = None
    #: runners waiting as hot spares (their records have not expired)
    spares: list[Lease] = field(default_factory=list)
    #: with ``share_tables``: table -> the runner holding its lease
    owners: dict[str, str] = field(default_factory=dict)
    #: with ``share_tables``: the live sharing runners' membership records (``Lease.note``:
    #: tables, streaming, lag in seconds)
    members: list[Lease] = field(default_factory=list)
    runner: dict | None = None
    tables: list[TableState] = field(default_factory=list)
    repository: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: role -> why it does not answer
    unreachable: dict[str, str] = field(default_factory=dict)
    #: state tables that could not be read (the cluster answers; their servers do not)
    unreadable: list[str] = field(default_factory=list)
    #: (role, state table) of each of them, e.g. ("standby", "leases")
    unread: set[tuple[str, str]] = field(default_factory=set)
    #: the policy's ``[replication] state_db``
    state_db: str = "drtool"
    #: selected tables a cluster that answers cannot serve now: {"table", "cluster", "reason"}
    unavailable: list[dict] = field(default_factory=list)
    #: seconds since the newest heartbeat, by this machine's clock (the source is down)
    heartbeat_age: float | None = None
    #: with ``[failover] fence = "write-hook"``: table -> whether drtool's fence hook is on it
    #: on the standby now (None: not read, the policy fences by permissions)
    fenced: dict[str, bool] | None = None

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        lease = None if self.lease is None else {
            "holder": self.lease.holder, "host": self.lease.host, "pid": self.lease.pid,
            "generation": self.lease.generation, "expires": self.lease.expires,
            "expired": self.lease.expired}
        return {
            "policy": self.policy, "healthy": self.healthy, "problems": self.problems,
            "roles": {"generation": self.roles.generation, "primary": self.roles.primary,
                      "step": self.roles.step, "replicate": self.roles.replicate,
                      "source": self.roles.source, "target": self.roles.target},
            "lag_seconds": None if self.lag is None else round(self.lag, 3),
            "lag_threshold": self.threshold,
            "unreachable": self.unreachable,
            "unreadable": self.unreadable,
            "unavailable": self.unavailable,
            "heartbeat_age_seconds": (None if self.heartbeat_age is None
                                      else round(self.heartbeat_age, 3)),
            "heartbeat": None if self.heartbeat is None else {
                "runner": self.heartbeat.runner, "seq": self.heartbeat.seq,
                "time": self.heartbeat.time},
            "lease": lease, "runner": self.runner,
            "owners": self.owners,
            "runners": [{"runner": x.holder, "host": x.host, "pid": x.pid,
                         **(x.note or {})} for x in self.members],
            "spares": [{"runner": x.holder, "host": x.host, "pid": x.pid, "expires": x.expires}
                       for x in self.spares],
            "tables": [{"table": str(t.table), "state": t.state, "message": t.message,
                        "progress": t.progress, "last_repair": t.last_repair,
                        "updated": t.updated,
                        "fenced": None if self.fenced is None else self.fenced.get(str(t.table))}
                       for t in self.tables],
            "last_repair": self.last_repair,
            "repository": self.repository,
        }

    @property
    def last_repair(self) -> dict | None:
        repairs = [{**t.last_repair, "table": str(t.table)} for t in self.tables if t.last_repair]
        return max(repairs, key=lambda r: r.get("time", 0), default=None)


async def read_status(policy: Policy, connector: Connector | None = None) -> StandbyStatus:
    """Connect both clusters and the repository, read everything status shows. A cluster
    that does not answer (the disaster case: the primary is down) is a problem in the result,
    not an error: the roles, heartbeat and runner records come from the cluster that answers,
    and with the primary down the newest heartbeat's age (by this machine's clock) stands in
    for the lag. Raises UsageError without [standby]."""
    if policy.standby is None:
        raise UsageError(f"{policy.path}: no [standby] section: drtool status reports on the "
                         "standby cluster")
    async with contextlib.AsyncExitStack() as stack:
        clusters: dict[str, Cluster] = {}
        out = StandbyStatus(policy.name, Roles(), policy.replication.lag_threshold)
        for role in ("primary", "standby"):
            try:
                cluster = await connect_role(policy, role, connector)
                clusters[role] = await stack.enter_async_context(cluster)
            except ClusterUnreachable as err:
                out.unreachable[role] = str(err)
        out.state_db = policy.replication.state_db
        readable = _Reader(out, out.state_db)
        found = [await readable(role, ROLES, state_store(c, policy).read_roles(), None)
                 for role, c in clusters.items()]
        out.roles = roles = newest_roles(*[r for r in found if r is not None])
        if roles.target in clusters:
            target = state_store(clusters[roles.target], policy)
            if roles.source in clusters:
                lag = await readable(roles.target, HEARTBEAT,
                                     lag_seconds(clusters[roles.source], target), (None, None))
                out.lag, out.heartbeat = lag
            else:
                out.heartbeat = await readable(roles.target, HEARTBEAT, target.read_heartbeat(),
                                               None)
            out.lease = await readable(roles.target, LEASES,
                                       target.read_lease(runner_lease(policy.name)), None)
            live = await readable(roles.target, LEASES, target.leases(
                policy_leases(policy.name)), [])  # one read: spares, members, table owners

            def having(prefix: str) -> list[Lease]:
                return [x for x in live if x.name.startswith(prefix)]
            out.spares = having(spare_lease(policy.name))
            out.members = having(member_lease(policy.name))
            prefix = table_lease(policy.name, "")
            out.owners = {x.name[len(prefix):]: x.holder for x in having(prefix)}
            out.runner = await readable(roles.target, RUNNER, target.read_runner(), None)
            out.tables = await readable(roles.target, TABLES, target.table_states(), [])
            if policy.failover.fence == "write-hook":
                out.fenced = await _fenced(clusters[roles.target], out.tables)
            out.unavailable = await _unavailable(clusters, roles, policy)
            if roles.source in clusters:
                out.problems += await users_problems(clusters[roles.source],
                                                     clusters[roles.target], policy)
    out.repository = await repository_status(policy)
    out.problems[:0] = list(out.unreachable.values()) + out.unreadable + [
        f"{u['table']}: unavailable on the {u['cluster']}: {u['reason']}" for u in out.unavailable]
    if roles.target not in out.unreachable and not out.unreadable:
        _judge_heartbeat(out)
    out.problems.extend(f"{t.table}: {t.message}" for t in out.tables if t.state == "error")
    if roles.step is not None:
        step = (roles.extra.get("failover") or {}).get("step") or roles.step
        out.problems.append(f"failover step {step} (generation {roles.generation}): run the "
                            "same failover/failback command again to finish it")
    return out


class _Reader:
    """Reads one state table for status: a table that cannot be read (its servers are down:
    "None of the replicas for this table are accessible") is named in ``out.unreadable``
    and its default shown, so status shows everything else it can read."""

    def __init__(self, out: StandbyStatus, db: str) -> None:
        self.out, self.db = out, db

    async def __call__(self, role: str, table: str, read: Awaitable[T], default: T) -> T:
        try:
            return await read
        except (ClusterError, ClusterUnreachable) as err:
            self.out.unread.add((role, table))
            problem = f"cannot read {self.db}.{table} on the {role}: {err}"
            if problem not in self.out.unreadable:  # e.g. two reads of the leases
                self.out.unreadable.append(problem)
            return default


#: how many tables status probes at once on each cluster
PROBES = 8


async def _unavailable(clusters: dict[str, Cluster], roles: Roles, policy: Policy) -> list[dict]:
    """The selected tables (as listed on the source, or on the target when the source does
    not answer) that a cluster which answers cannot read now: one cheap read each
    (``key_bounds``, it touches every shard), ClusterUnreachable naming the server's reason
    ("primary replica for shard ... not available"). A table missing on a cluster is not
    listed (the runner creates it); a catalogue that cannot be read gives no list."""
    lister = clusters.get(roles.source) or clusters.get(roles.target)
    try:
        tables = [] if lister is None else policy.tables.selected(await lister.list_tables())
    except (ClusterError, ClusterUnreachable):
        return []
    found: list[dict] = []

    def probe(role: str, cluster: Cluster, table) -> Callable[[], Awaitable[None]]:
        async def read() -> None:
            try:
                await cluster.key_bounds(table)
            except NotFound:
                pass
            except ClusterUnreachable as err:
                found.append({"table": str(table), "cluster": role, "reason": str(err)})
        return read
    for role, cluster in clusters.items():
        await gather_bounded([probe(role, cluster, t) for t in tables], PROBES)
    return sorted(found, key=lambda u: (u["table"], u["cluster"]))


async def _fenced(target: Cluster, tables: list[TableState]) -> dict[str, bool]:
    """Which of ``tables`` carry drtool's write-hook fence on ``target`` (a table missing
    there: False)."""
    found = {}
    for state in tables:
        meta = await table_meta_or_none(target, state.table)
        found[str(state.table)] = meta is not None and is_drtool_fence(meta.write_hook)
    return found


def _judge_heartbeat(out: StandbyStatus) -> None:
    """The lag problem, if any (the target answered)."""
    roles = out.roles
    if out.heartbeat is None:
        out.problems.append(f"no heartbeat on the {roles.target}: is drtool replicate running?")
    elif out.lag is None:  # the source does not answer: how old is what the target has?
        out.heartbeat_age = max(0.0, time.time() - out.heartbeat.time)
        out.problems.append(f"the newest heartbeat on the {roles.target} was written "
                            f"{out.heartbeat_age:.1f} s ago (by this machine's clock): writes "
                            f"to the {roles.source} after it may not be on the {roles.target}")
    elif out.lag > out.threshold:
        out.problems.append(f"lag {out.lag:.1f} s is above the threshold {out.threshold:g} s")


async def repository_status(policy: Policy) -> dict:
    """The newest snapshot in the repository, or why it cannot be read."""
    try:
        async with await open_repository(policy) as repo:
            ids = await repo.list_snapshots()
            out: dict = {"snapshots": len(ids)}
            if policy.archive is not None:
                out["archive"] = await archive_status(repo, policy.archive.spool)
            try:
                latest = await repo.resolve("latest")
            except NotFound:  # none, or only the change log's bases
                return out
            return {**out, "latest": latest.id, "time": latest.time,
                    "source": latest.source, "documents": latest.doc_count}
    except DrtoolError as err:
        return {"error": str(err)}
