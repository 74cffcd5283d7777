"""Following the source's catalogue: the part of the runner (``Runner``,
drtool.standby.runner) that polls it every ``schema_poll`` (new tables, index and hook changes,
dropped tables; the users/permissions sync hook). Polls failing in a row (an outage) are one
warning, and the first poll that works again one line."""

from __future__ import annotations

import asyncio
import contextlib
import time

from drtool.cluster.base import Cluster
from drtool.coordination.roles import Roles
from drtool.coordination.state import HEARTBEAT, StateStore, state_store
from drtool.errors import DrtoolError
from drtool.model import TableName
from drtool.standby.tableinfo import TableSettings


FOLLOW_SERVERS_EVERY = 60.0  # seconds between checks for servers added to a cluster


class CataloguePoll:
    """Mixed into Runner: needs ``policy``, ``events``, ``users_sync``, ``replicators``,
    ``_halt``, ``_selected``, ``_policy_tables``, ``_start_table`` and ``_stop_table``."""

    async def _poll(self, source: Cluster, target: Cluster, store: StateStore, roles: Roles,
                    settings: TableSettings) -> None:
        every = self.policy.replication.schema_poll
        failed = 0  # polls failed in a row: an outage is one warning, its end one line
        followed, following = time.monotonic(), None
        try:
            while not self._halt.is_set():
                if time.monotonic() - followed >= FOLLOW_SERVERS_EVERY and (
                        following is None or following.done()):
                    followed = time.monotonic()  # in a task of its own: it may wait for a
                    following = asyncio.create_task(  # cluster with a server down
                        self.follow_servers(store, state_store(source, self.policy)),
                        name="follow servers")
                failed = await self._poll_step(source, target, store, roles, settings, failed)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._halt.wait(), every)
        finally:
            if following is not None:
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)

    async def _poll_step(self, source: Cluster, target: Cluster, store: StateStore,
                         roles: Roles, settings: TableSettings, failed: int) -> int:
        """One poll; returns how many polls in a row have failed now."""
        try:
            if self.users_sync is not None:
                await self.users_sync(source, target)
            await self.poll_once(source, target, store, roles, settings)
            if failed:
                self.events.emit("schema-poll-restored", f"following the {roles.source}'s "
                                 f"catalogue again after {failed} failed polls")
            return 0
        except DrtoolError as err:
            self.events.metrics.error("schema")
            if not failed:
                self.events.warn("schema-poll-failed", f"following the {roles.source}'s "
                                 f"catalogue: {err} (said once until a poll works again)")
            return failed + 1

    async def follow_servers(self, *stores: StateStore) -> None:
        """drtool's own tables on each cluster get a replica on servers added since they were
        made (``StateStore.ensure``: up to three; best effort, a cluster with a server down
        is tried again at the next check)."""
        for store in stores:
            with contextlib.suppress(DrtoolError):
                await store.ensure()

    async def poll_once(self, source: Cluster, target: Cluster, store: StateStore,
                        roles: Roles, settings: TableSettings) -> None:
        """Follow the source's catalogue once: start new tables, follow index and hook changes
        of streaming ones, report (and with ``drop_tables`` drop) dropped ones (shared: any)."""
        present = set(await self._selected(source))
        heartbeat = TableName(self.policy.replication.state_db, HEARTBEAT)
        for table in sorted(present - set(self.replicators)):
            self.events.emit("table-added", f"{table}: new table on the {roles.source}",
                             table=str(table))
            self._start_table(table, source, target, store, roles, settings)
        gone = set(self.replicators) - present - {heartbeat}
        if self.policy.replication.share_tables:  # the tables are the sharing runners'
            everywhere = set(await self._policy_tables(source))
            gone |= {s.table for s in await store.table_states()} - everywhere
        for table in sorted(gone):
            await self._stop_table(table)
            dropping = self.policy.replication.drop_tables
            self.events.warn("table-dropped", f"{table}: dropped on the {roles.source}; "
                             + ("dropping it on the " + roles.target if dropping else
                                f"kept on the {roles.target} (set [replication] drop_tables "
                                "to drop it too)"), table=str(table))
            if dropping:
                await target.drop_table(table)
            if settings.hook_fence is not None:
                await settings.hook_fence.forget(table)
            await store.forget_table_state(table)
        for table, rep in list(self.replicators.items()):
            if rep.state == "streaming" and table != heartbeat:
                with contextlib.suppress(DrtoolError):
                    await rep.follow_schema()
