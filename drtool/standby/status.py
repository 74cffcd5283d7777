"""What ``drtool status`` shows: read from the clusters' state databases and the repository,
so it works whether or not a runner is running.

Healthy means: a heartbeat is visible on the replication target, the lag is at most
``[replication] lag_threshold``, and no table is in the ``error`` state.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from drtool.core.session import connect_role, open_repository
from drtool.failover.users_sync import users_problems
from drtool.core.state import (
    Heartbeat, Lease, Roles, StateStore, TableState, lag_seconds, newest_roles, runner_lease,
)
from drtool.errors import DrtoolError, UsageError
from drtool.policy import Policy


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
            "heartbeat": None if self.heartbeat is None else {
                "runner": self.heartbeat.runner, "seq": self.heartbeat.seq,
                "time": self.heartbeat.time},
            "lease": lease, "runner": self.runner,
            "tables": [{"table": str(t.table), "state": t.state, "message": t.message,
                        "progress": t.progress, "last_repair": t.last_repair,
                        "updated": t.updated} for t in self.tables],
            "last_repair": self.last_repair,
            "repository": self.repository,
        }

    @property
    def last_repair(self) -> dict | None:
        repairs = [{**t.last_repair, "table": str(t.table)} for t in self.tables if t.last_repair]
        return max(repairs, key=lambda r: r.get("time", 0), default=None)


async def read_status(policy: Policy) -> StandbyStatus:
    """Connect both clusters and the repository, read everything status shows. Raises
    UsageError without [standby], ClusterUnreachable when a cluster cannot be reached."""
    if policy.standby is None:
        raise UsageError(f"{policy.path}: no [standby] section: drtool status reports on the "
                         "standby cluster")
    db = policy.replication.state_db
    async with await connect_role(policy, "standby") as standby, \
            await connect_role(policy, "primary") as primary:
        clusters = {"primary": primary, "standby": standby}
        roles = newest_roles(*await asyncio.gather(
            *[StateStore(c, db, policy.name).read_roles() for c in clusters.values()]))
        target = StateStore(clusters[roles.target], db, policy.name)
        out = StandbyStatus(policy.name, roles, policy.replication.lag_threshold)
        out.lag, out.heartbeat = await lag_seconds(clusters[roles.source], target)
        out.lease = await target.read_lease(runner_lease(policy.name))
        out.runner = await target.read_runner()
        out.tables = await target.table_states()
        out.problems += await users_problems(clusters[roles.source], clusters[roles.target], policy)
    out.repository = await _repository(policy)
    if out.lag is None:
        out.problems.append(f"no heartbeat on the {roles.target}: is drtool replicate running?")
    elif out.lag > out.threshold:
        out.problems.append(f"lag {out.lag:.1f} s is above the threshold "
                            f"{out.threshold:g} s")
    out.problems.extend(f"{t.table}: {t.message}" for t in out.tables if t.state == "error")
    if roles.step is not None:
        step = (roles.extra.get("failover") or {}).get("step") or roles.step
        out.problems.append(f"failover step {step} (generation {roles.generation}): run the "
                            "same failover/failback command again to finish it")
    return out


async def _repository(policy: Policy) -> dict:
    """The newest snapshot in the repository, or why it cannot be read."""
    try:
        async with await open_repository(policy) as repo:
            ids = await repo.list_snapshots()
            if not ids:
                return {"snapshots": 0}
            latest = await repo.resolve("latest")
            return {"snapshots": len(ids), "latest": latest.id, "time": latest.time,
                    "source": latest.source, "documents": latest.doc_count}
    except DrtoolError as err:
        return {"error": str(err)}
