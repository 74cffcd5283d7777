"""Several runners of one policy sharing its tables (``[replication] share_tables = true``).

The unit of ownership is a table: its lease ``table_lease(policy, table)`` on the replication
target. Every sharing runner keeps a membership record (``member_lease``, expiring with
``lease_ttl``); each table is assigned to one member by rendezvous hashing with bounded load
over the live members (``table_owners``: every runner computes the same answer from the same
members and tables, the split is as even as the numbers allow, and a member joining or
leaving moves few tables). Every second a runner:
renews its record and the leases of the tables it replicates, gives up (drains, then
releases) the tables now assigned to another member, and takes the free or expired leases of
the tables assigned to it. A table changing hands is caught up like after a restart: the new
owner opens its feed first, then repairs (never a full recopy). Each table's writes go
through a FencedCluster of its own lease: a runner that lost a table stops writing to it
before another can take it.

The policy-wide duties (heartbeat, catalogue poll, users sync, scheduled snapshots) stay
with whichever runner holds the runner lease (drtool.standby.runner); the others wait for it
as spares meanwhile, while replicating their share of the tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable

from drtool.cluster.base import Cluster
from drtool.coordination.leases import FencedCluster, LeaseKeeper
from drtool.coordination.roles import Roles, member_lease, table_lease
from drtool.coordination.state import LeaseHolder, StateStore
from drtool.errors import DrtoolError
from drtool.model import TableName
from drtool.standby.events import Events
from drtool.standby.table import TableReplicator
from drtool.standby.tableinfo import TableSettings

DRAIN_TIMEOUT = 60.0


def _weight(member: str, table: TableName) -> bytes:
    return hashlib.sha256(f"{member}\0{table}".encode()).digest()


def table_owners(tables: list[TableName], members: list[str]) -> dict[TableName, str]:
    """Which member replicates each table: rendezvous hashing with bounded load. With n
    tables and k members each member takes n // k tables, and n % k of them one more: each
    table, in name order, goes to the member that ranks it highest among those with room
    left. Every runner computes the same answer from the same members and tables; a member
    joining or leaving moves few tables. Empty without members."""
    if not members:
        return {}
    base, extra = divmod(len(set(tables)), len(members))
    load = dict.fromkeys(members, 0)
    owners: dict[TableName, str] = {}
    for table in sorted(set(tables), key=str):
        for member in sorted(members, key=lambda m: _weight(m, table), reverse=True):
            if load[member] < base or (load[member] == base and extra > 0):
                extra -= load[member] == base
                owners[table], load[member] = member, load[member] + 1
                break
    return owners


class TableShare:
    """This runner's share of the policy's tables in one direction (``roles``). ``tick``
    once a second; ``close`` drains every table and releases its leases."""

    def __init__(self, policy: str, source: Cluster, target: Cluster, store: StateStore,
                 events: Events, settings: TableSettings, holder: LeaseHolder, ttl: float,
                 roles: Roles, selected: Callable[[], "asyncio.Future[list[TableName]]"]) -> None:
        self.policy, self.source, self.target, self.store = policy, source, target, store
        self.events, self.settings, self.holder, self.ttl = events, settings, holder, ttl
        self.roles, self.selected = roles, selected
        self.replicators: dict[TableName, TableReplicator] = {}
        self._tasks: dict[TableName, asyncio.Task] = {}
        self._keepers: dict[TableName, LeaseKeeper] = {}

    async def tick(self) -> None:
        """Renew, give up, take (see the module doc). Raises what the clusters raise."""
        note = self.note()
        self.events.metrics.backlog(self.holder.id, note["lag"])
        await self.store.acquire_lease(member_lease(self.policy, self.holder.id), self.holder,
                                       self.ttl, note=note)
        members = [m.holder for m in await self.store.leases(member_lease(self.policy))]
        tables = await self.selected()
        mine = {t for t, owner in table_owners(tables, members).items()
                if owner == self.holder.id}
        handed = sorted(set(self.replicators) - mine)
        for table in handed:
            self.events.emit("table-handed-over", f"{table}: now another runner's (runners: "
                             f"{len(members)}); draining it", table=str(table))
        await asyncio.gather(*[self._give_up(t) for t in handed])  # at once: the tick renews
        for table, keeper in list(self._keepers.items()):
            if not (await keeper.renew()).acquired:
                self.events.warn("table-lease-lost", f"{table}: another runner took it",
                                 table=str(table))
                await self._give_up(table, release=False)
        for table in sorted(mine - set(self.replicators)):
            keeper = LeaseKeeper(self.store, table_lease(self.policy, table), self.holder,
                                 self.ttl)
            if (await keeper.take()).acquired:
                self._start(table, keeper)

    def note(self) -> dict:
        """What this runner says of itself in its membership record (``drtool status``): its
        tables, how many stream, and its lag (the oldest change read and not yet applied, in
        seconds, over the tables that stream)."""
        reps = self.replicators.values()
        streaming = [rep for rep in reps if rep.state == "streaming"]
        return {"tables": len(self.replicators), "streaming": len(streaming),
                "lag": round(max((rep.backlog_age() for rep in streaming), default=0.0), 3)}

    def _start(self, table: TableName, keeper: LeaseKeeper) -> None:
        rep = TableReplicator(self.source, FencedCluster(self.target, keeper),  # type: ignore[arg-type]
                              table, self.store, self.events, self.settings,
                              source_role=self.roles.source, target_role=self.roles.target)
        self._keepers[table], self.replicators[table] = keeper, rep
        self._tasks[table] = asyncio.create_task(rep.run(), name=f"replicate {table}")
        self.events.emit("table-taken", f"{table}: replicated by runner {self.holder.id}",
                         table=str(table), runner=self.holder.id)

    async def _give_up(self, table: TableName, release: bool = True) -> None:
        rep, task = self.replicators.pop(table), self._tasks.pop(table)
        keeper = self._keepers.pop(table)
        rep.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(task, DRAIN_TIMEOUT)
        if release:
            with contextlib.suppress(DrtoolError):
                await keeper.release()

    async def run(self, done: asyncio.Event, every: float) -> None:
        """``tick`` every ``every`` seconds until ``done``, then ``close``. A tick that fails
        (a cluster does not answer) is logged once and tried again."""
        trouble = False
        try:
            while not done.is_set():
                try:
                    await self.tick()
                    trouble = False
                except DrtoolError as err:
                    if not trouble:
                        self.events.warn("share-failed", f"sharing the tables: {err}")
                    trouble = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), every)
        finally:
            await self.close()

    async def close(self) -> None:
        """Drain every table, release its lease and this runner's membership record."""
        await asyncio.gather(*[self._give_up(t) for t in list(self.replicators)])
        with contextlib.suppress(DrtoolError):
            await self.store.release_lease(member_lease(self.policy, self.holder.id),
                                           self.holder.id)
