"""The runner: one policy's warm standby, kept current for as long as the process runs.

Start: connect both clusters (unreachable -> ClusterUnreachable, exit 3; no [standby] ->
UsageError, exit 2; later, e.g. when replication starts again after a failover, an unreachable
cluster is retried with the replicators' backoff, 1 s doubling to 30 s), ensure drtool's
state database on both, read the roles (the highest generation on either cluster; source = the
current primary, target = the other), take the runner lease on the target. A lease held by a
process gone on this host is taken at once; one held by a live runner makes this one a hot
spare (logged once, shown by ``drtool status``) that takes over within ``lease_ttl`` + 1 s of
the lease expiring (the active runner died or was cut off); with ``wait=False``
(``--no-wait``) it is LeaseHeld, exit 8. Then, concurrently:
one ``TableReplicator`` per selected table plus drtool's heartbeat table; a tick every second
(heartbeat on the source, lease renewal and roles check on the target, lag); a catalogue poll
every ``schema_poll`` (new tables, index changes, dropped tables; the users/permissions sync
hook); scheduled snapshots.

Fencing (STATE-DB.md): every write into the target goes through ``FencedCluster``: past the
lease's local deadline (drtool.coordination.leases) nothing is written, so a runner cut off
or paused stops writing before another can take its lease; a runner whose renewal is refused
(its lease was taken) drains and waits as a spare again (``wait=False``: LeaseHeld). A target whose roles generation is higher than the one the runner
started with, or that is now the primary, ends the runner with StaleGeneration (exit 8) before
anything more is written. ``step = "stop-replication"`` (same generation) on the target makes
it apply what it read, mark its tables stopped, release the lease and wait; a later
generation with ``replicate`` true starts it again in the new direction. Between failovers
the target stays fenced from the application: with ``[failover] fence = "write-hook"`` every
selected target table gets a hook refusing every write (drtool.coordination.standby_fence; the
source's hooks are recorded there for the promotion instead of being copied), with the
permissions fence the users_sync hook keeps the app users without write permission.

``stop()`` (SIGTERM/SIGINT): stop reading feeds, apply what was read, release the lease,
return. Every connection is closed when ``run`` returns; nothing is global.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

from drtool.cluster import Connector
from drtool.cluster.base import Cluster
from drtool.changelog.service import ArchiveService
from drtool.wiring.open import connect_role
from drtool.coordination.leases import FencedCluster, LeaseKeeper
from drtool.coordination.state import (
    HEARTBEAT, LeaseHolder, Roles, StateStore, current_roles, lag_seconds, runner_lease,
    state_store,
)
from drtool.errors import (
    ClusterUnreachable, DrtoolError, LeaseHeld, OwnershipError, StaleGeneration, UsageError,
)
from drtool.coordination.roles import STOP_REPLICATION
from drtool.coordination.standby_fence import HookFence
from drtool.model import TableName
from drtool.config.policy import Policy
from drtool.standby.events import Events
from drtool.wiring.snapshots import read_limit
from drtool.standby.schedule import SnapshotSchedule
from drtool.standby.share import TableShare
from drtool.standby.catalogue import CataloguePoll
from drtool.standby.spare import TICK, Spare
from drtool.standby.table import BACKOFF_FIRST, BACKOFF_MAX, TableReplicator
from drtool.standby.tableinfo import TableSettings

DRAIN_TIMEOUT = 60.0

#: ``users_sync(source, target)``: keeps users and permissions equal on the target (issue 10
#: provides it; called after start and on every catalogue poll).
UsersSync = Callable[[Cluster, Cluster], Awaitable[None]]


def new_holder(generation: int = 0) -> LeaseHolder:
    host = socket.gethostname()
    return LeaseHolder(f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}", host, os.getpid(), generation)


class Runner(Spare, CataloguePoll):
    def __init__(self, policy: Policy, events: Events, *, users_sync: UsersSync | None = None,
                 holder: LeaseHolder | None = None, connector: Connector | None = None,
                 wait: bool = True) -> None:
        if policy.standby is None and policy.archive is None:
            raise UsageError(f"{policy.path}: no [standby] section: drtool replicate needs the "
                             "standby cluster to replicate into (or [archive] to keep only "
                             "the change log)")
        self.policy, self.events, self.users_sync = policy, events, users_sync
        self.connector = connector  # how the clusters are reached (drtool.cluster)
        self.holder = holder or new_holder()
        self.wait = wait  # a live holder of the lease: wait as a spare (False: LeaseHeld)
        self.replicators: dict[TableName, TableReplicator] = {}
        self.roles = Roles()
        self.state = "starting"
        self.lag: float | None = None
        self._stop = asyncio.Event()
        self._halt = asyncio.Event()  # this direction ends (stop, stop-replication, fatal)
        self._clusters: dict[str, Cluster] = {}
        self._tasks: dict[TableName, asyncio.Task] = {}
        self._record: dict = {}
        self.share: TableShare | None = None  # with share_tables: this runner's tables
        self.archive = ArchiveService(policy, events) if policy.archive else None

    def stop(self) -> None:
        """Ask the runner to finish (safe from a signal handler via the loop)."""
        self._stop.set()
        self._halt.set()

    # --- the whole run --------------------------------------------------------------------
    async def run(self) -> None:
        try:
            if self.policy.standby is None:  # [archive] alone: the change log, no standby
                self._clusters["primary"] = primary = await connect_role(
                    self.policy, "primary", self.connector)
                self.state = "running"
                await self.archive.run(primary, self._stop, lambda: self._policy_tables(primary))
                return
            self._clusters["standby"] = await connect_role(self.policy, "standby",
                                                           self.connector)
            self._clusters["primary"] = await connect_role(self.policy, "primary",
                                                           self.connector)
            delay, first = BACKOFF_FIRST, True
            while not self._stop.is_set():
                try:
                    self.roles = await self._read_roles()
                    if not self.roles.replicate or self.roles.step == STOP_REPLICATION:
                        first = False
                        await self._idle(self.roles)
                        continue
                    active = await self._replicate(self.roles)
                except ClusterUnreachable as err:
                    if first:  # at start: say so and exit 3 (the operator is watching)
                        raise
                    self.state = "retrying"
                    self.events.warn("connection-lost", f"starting to replicate: {err}; "
                                     f"retrying in {delay:g} s")
                    self.events.metrics.error("unreachable")
                    await self._pause(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                    continue
                first, delay = False, BACKOFF_FIRST
                if active and not self._stop.is_set():
                    await self._idle(self.roles)
        finally:
            for cluster in self._clusters.values():
                await cluster.close()
            self._clusters.clear()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def _store(self, role: str) -> StateStore:
        return state_store(self._clusters[role], self.policy)

    async def _read_roles(self) -> Roles:
        return await current_roles(self.policy, self._clusters["primary"],
                                   self._clusters["standby"])

    async def _idle(self, roles: Roles) -> None:
        """Wait (not replicating) until the roles allow replication again, or stop."""
        self.state = "idle"
        self.events.metrics.runner(self.holder.id, "idle")
        why = (f"stopped for failover (step {roles.step})" if roles.step == STOP_REPLICATION
               else "roles say not to replicate")
        self.events.emit("runner-idle", f"not replicating: {why} (generation "
                         f"{roles.generation}); waiting for new roles", generation=roles.generation)
        while not self._stop.is_set():
            await self._pause(TICK)
            try:
                now = await self._read_roles()
            except ClusterUnreachable:
                continue
            if now.replicate and now.step != STOP_REPLICATION and (
                    now.generation > roles.generation or roles.step == STOP_REPLICATION):
                self.events.emit("runner-resumed", f"roles generation {now.generation}: "
                                 f"replicating {now.source} -> {now.target}",
                                 generation=now.generation)
                return

    # --- one direction --------------------------------------------------------------------
    async def _replicate(self, roles: Roles) -> bool:
        """Replicate in ``roles``' direction until halted. False when this runner never
        became active (the roles changed while it waited as a spare) or lost its lease: the
        caller looks at the roles again. With ``share_tables`` this runner replicates its
        share of the tables (drtool.standby.share) meanwhile, active or spare."""
        if not self.policy.replication.share_tables:
            return await self._direction(roles)
        target = self._store(roles.target)
        await target.ensure()
        share = TableShare(
            self.policy.name, self._clusters[roles.source], self._clusters[roles.target],
            target, self.events, self._settings(roles.source), LeaseHolder(
                self.holder.id, self.holder.host, self.holder.pid, roles.generation),
            self.policy.replication.lease_ttl, roles,
            lambda: self._policy_tables(self._clusters[roles.source]))
        self.share, done = share, asyncio.Event()
        task = asyncio.create_task(share.run(done, TICK), name="table share")
        try:
            return await self._direction(roles)
        finally:
            done.set()
            await task

    async def _direction(self, roles: Roles) -> bool:
        self._halt = asyncio.Event()
        if self._stop.is_set():
            self._halt.set()
        source_role, target_role = roles.source, roles.target
        source, target = self._clusters[source_role], self._clusters[target_role]
        s_store, t_store = self._store(source_role), self._store(target_role)
        await asyncio.gather(s_store.ensure(), t_store.ensure())
        holder = LeaseHolder(self.holder.id, self.holder.host, self.holder.pid, roles.generation)
        lease_name = runner_lease(self.policy.name)
        keeper = LeaseKeeper(t_store, lease_name, holder, self.policy.replication.lease_ttl)
        if not await self._become_active(keeper, roles):
            return False
        target = FencedCluster(target, keeper)  # type: ignore[assignment]
        self.state = "running"
        self.events.emit("runner-started", f"runner {holder.id} replicating {source_role} -> "
                         f"{target_role} (generation {roles.generation})", runner=holder.id,
                         generation=roles.generation)
        previous = await t_store.read_runner() or {}
        self._record = {"runner": holder.id, "host": holder.host, "pid": holder.pid,
                        "state": "running", "generation": roles.generation,
                        "source": source_role, "target": target_role,
                        "snapshot": previous.get("snapshot")}
        outcome: list[BaseException] = []
        background: list[asyncio.Task] = []
        archive: asyncio.Task | None = None
        try:
            await t_store.put_runner(self._record)
            settings = self._settings(source_role)
            heartbeat = TableName(self.policy.replication.state_db, HEARTBEAT)
            self._start_table(heartbeat, source, target, t_store, roles,
                              TableSettings(**{**settings.__dict__, "record_state": False}))
            for table in await self._selected(source):
                self._start_table(table, source, target, t_store, roles, settings)
            schedule = SnapshotSchedule(
                self.policy, self.events, self._clusters.__getitem__, self._save_snapshot(t_store),
                last=(previous.get("snapshot") or {}).get("time"))
            background = [
                asyncio.create_task(self._ticks(s_store, t_store, keeper, roles, outcome),
                                    name="runner ticks"),
                asyncio.create_task(self._poll(source, target, t_store, roles, settings),
                                    name="catalogue poll"),
                asyncio.create_task(schedule.run(self._halt), name="snapshot schedule"),
            ]
            if self.archive is not None:  # the log follows the current primary
                archive = asyncio.create_task(
                    self.archive.run(source, self._halt, lambda: self._policy_tables(source)))
            await self._halt.wait()
        finally:
            if archive is not None:  # it seals its open slices and empties the spool
                self._halt.set()
                await asyncio.gather(archive, return_exceptions=True)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self._drain()
            self._record["state"] = "stopped" if self._stop.is_set() else "idle"
            with contextlib.suppress(DrtoolError):
                await t_store.put_runner(self._record)
            with contextlib.suppress(DrtoolError):
                await keeper.release()
                self.events.emit("lease-released", f"runner {holder.id} released its lease",
                                 runner=holder.id)
        if outcome and isinstance(outcome[0], LeaseHeld) and self.wait:
            self.events.warn("lease-lost", f"{outcome[0]}; waiting as a spare")
            return False
        if outcome:
            raise outcome[0]
        return True

    def _settings(self, source_role: str) -> TableSettings:
        rep = self.policy.replication
        reads = read_limit(self.policy, source_role, self.roles)
        fence = None  # with the permissions fence, the users_sync hook keeps the target fenced
        if self.policy.failover.fence == "write-hook":
            fence = HookFence(self._store(self.roles.target), self.roles.generation)
        return TableSettings(queue_size=rep.changefeed_queue_size, batch_size=rep.batch_size,
                             gather=rep.feed_gather,
                             shards=rep.standby_shards, replicas=rep.standby_replicas,
                             source_reads=reads, hook_fence=fence)

    async def _selected(self, source: Cluster) -> list[TableName]:
        """The tables this runner replicates itself (shared ones: TableShare's)."""
        return [] if self.policy.replication.share_tables else await self._policy_tables(source)

    async def _policy_tables(self, source: Cluster) -> list[TableName]:
        return self.policy.tables.selected(await source.list_tables())

    def _start_table(self, table: TableName, source: Cluster, target: Cluster,
                     store: StateStore, roles: Roles, settings: TableSettings) -> None:
        rep = TableReplicator(source, target, table, store, self.events, settings,
                              source_role=roles.source, target_role=roles.target)
        self.replicators[table] = rep
        self._tasks[table] = asyncio.create_task(rep.run(), name=f"replicate {table}")

    async def _stop_table(self, table: TableName) -> None:
        rep, task = self.replicators.pop(table, None), self._tasks.pop(table, None)
        if rep is not None:
            rep.stop()
        if task is not None:
            try:
                await asyncio.wait_for(task, DRAIN_TIMEOUT)
            except TimeoutError:
                self.events.warn("drain-timeout", f"{table}: not drained after "
                                 f"{DRAIN_TIMEOUT:g} s; stopped anyway", table=str(table))

    async def _drain(self) -> None:
        """Stop every replicator: each applies what it has read, then marks itself stopped."""
        await asyncio.gather(*[self._stop_table(t) for t in list(self.replicators)])

    def _save_snapshot(self, store: StateStore) -> Callable[[dict], Awaitable[None]]:
        async def save(snapshot: dict) -> None:
            self._record["snapshot"] = snapshot
            await store.put_runner(self._record)
        return save

    # --- every second ---------------------------------------------------------------------
    async def _ticks(self, s_store: StateStore, t_store: StateStore, keeper: LeaseKeeper,
                     roles: Roles, outcome: list[BaseException]) -> None:
        seq, holder, trouble = 0, keeper.holder, False
        while not self._halt.is_set():
            try:
                target_roles = await t_store.read_roles()
                self._check_roles(roles, target_roles)
                if target_roles.step == STOP_REPLICATION:
                    self.events.emit("stop-replication", "failover asked replication to stop: "
                                     "applying what was read, then releasing the lease",
                                     generation=target_roles.generation)
                    self._halt.set()
                    return
                renewed = await keeper.renew()
                if not renewed.acquired:
                    who = renewed.lease.describe() if renewed.lease else "nobody holds it now"
                    raise LeaseHeld(f"policy {self.policy.name}: this runner lost its lease on "
                                    f"the {roles.target} ({who}); stopping")
                seq += 1
                await s_store.write_heartbeat(holder.id, seq)
                self.lag, _ = await lag_seconds(s_store.cluster, t_store)
                self.events.metrics.lag(self.lag)
                if trouble:  # a restarted server may have lost soft-durability writes
                    self.events.emit("connection-restored", "both clusters answer again; "
                                     "repairing every table")
                    for rep in self.replicators.values():
                        rep.request_repair("reconnect")
                trouble = False
            except OwnershipError as err:
                self.events.warn("runner-fenced", str(err))
                outcome.append(err)
                self._halt.set()
                return
            except ClusterUnreachable as err:
                if not trouble:
                    self.events.warn("connection-lost", f"heartbeat: {err}")
                    self.events.metrics.error("unreachable")
                trouble = True
            except DrtoolError as err:
                self.events.metrics.error("cluster")
                self.events.warn("heartbeat-error", f"heartbeat: {err}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._halt.wait(), TICK)

    def _check_roles(self, started: Roles, now: Roles) -> None:
        if now.generation > started.generation or (
                now.generation == started.generation and now.primary == started.target):
            raise StaleGeneration(
                f"the {started.target}'s roles are at generation {now.generation} (primary: "
                f"{now.primary}) but this runner started at generation {started.generation} "
                f"replicating into the {started.target}: a failover happened; not writing into "
                "it any more (start drtool replicate again to follow the new roles)")
