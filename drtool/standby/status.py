"""What ``drtool status`` shows: read from the clusters' state databases and the repository,
so it works whether or not a runner is running.

Healthy means: both clusters answer, a heartbeat is visible on the replication target, the
lag is at most ``[replication] lag_threshold``, and no table is in the ``error`` state.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

from drtool.cluster import Connector
from drtool.cluster.base import Cluster
from drtool.changelog.status import archive_status
from drtool.wiring.open import connect_role, open_repository
from drtool.coordination.state import (
    Heartbeat, Lease, Roles, TableState, current_roles, lag_seconds, runner_lease, state_store,
)
from drtool.errors import ClusterUnreachable, DrtoolError, NotFound, UsageError
from drtool.compare.diff import table_meta_or_none
from drtool.compare.shape import is_drtool_fence
from drtool.coordination.users_sync import users_problems
from drtool.config.policy import Policy


@dataclass
class StandbyStatus:
    policy: str
    roles: Roles
    threshold: float
    lag: float | None = None
    heartbeat: Heartbeat | None = None
    lease: Lease | None = None
    runner: dict | None = None
    tables: list[TableState] = field(default_factory=list)
    repository: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: role -> why it does not answer
    unreachable: dict[str, str] = field(default_factory=dict)
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
            "heartbeat_age_seconds": (None if self.heartbeat_age is None
                                      else round(self.heartbeat_age, 3)),
            "heartbeat": None if self.heartbeat is None else {
                "runner": self.heartbeat.runner, "seq": self.heartbeat.seq,
                "time": self.heartbeat.time},
            "lease": lease, "runner": self.runner,
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
        out.roles = roles = await current_roles(policy, *clusters.values())
        if roles.target in clusters:
            target = state_store(clusters[roles.target], policy)
            if roles.source in clusters:
                out.lag, out.heartbeat = await lag_seconds(clusters[roles.source], target)
            else:
                out.heartbeat = await target.read_heartbeat()
            out.lease = await target.read_lease(runner_lease(policy.name))
            out.runner = await target.read_runner()
            out.tables = await target.table_states()
            if policy.failover.fence == "write-hook":
                out.fenced = await _fenced(clusters[roles.target], out.tables)
            if roles.source in clusters:
                out.problems += await users_problems(clusters[roles.source],
                                                     clusters[roles.target], policy)
    out.repository = await repository_status(policy)
    out.problems[:0] = list(out.unreachable.values())
    if roles.target not in out.unreachable:
        _judge_heartbeat(out)
    out.problems.extend(f"{t.table}: {t.message}" for t in out.tables if t.state == "error")
    if roles.step is not None:
        step = (roles.extra.get("failover") or {}).get("step") or roles.step
        out.problems.append(f"failover step {step} (generation {roles.generation}): run the "
                            "same failover/failback command again to finish it")
    return out


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
