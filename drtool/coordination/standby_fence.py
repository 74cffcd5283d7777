"""What the runner keeps on its target (the standby) between failovers, in the target's
``runner`` table, and the write-hook standby fence.

The standby is fenced from the application at all times, not only during a failover: a write
landing there would be overwritten or deleted by replication. With ``[failover] fence =
"permissions"`` the app users' write permission is False there (drtool.coordination.users_sync);
with ``"write-hook"`` (an application using admin, whose permissions cannot change) every
selected table there has a write hook refusing every write, ``standby_fence_message`` (naming
the policy and the generation). The runner's own writes bypass hooks (``ignore_write_hook``).

Records (one document each, written only when they change):

* ``<policy>:standby-fence``: a FenceRecord of what a promotion restores when the old primary
  cannot be asked (an unplanned failover's unfence step lifts it): the source's write
  permissions of the app users, or the source's own write hook of every fenced table. A hook
  is recorded BEFORE the fence hook is installed on that table, so every fenced table is in
  the record; the source's hooks seen while a failover runs (the source may be fenced by it)
  and drtool's own fence hooks are never recorded.
* ``<policy>:users``: the users on both clusters after the last users sync (those dropped on
  the source later are dropped on the target).
"""

from __future__ import annotations

import asyncio
import json

from drtool.cluster.base import ALWAYS, Cluster
from drtool.compare.shape import FENCE_PREFIX, is_drtool_fence
from drtool.coordination.state import RUNNER, StateStore, state_store
from drtool.errors import NotFound
from drtool.coordination.fence import FenceRecord
from drtool.model import TableName

STANDBY_FENCE = "standby-fence"
USERS = "users"


def standby_fence_message(policy: str, generation: int) -> str:
    return (f"{FENCE_PREFIX}this cluster is the standby of drtool policy {policy} (generation "
            f"{generation}); write to the primary")


async def _read(store: StateStore, suffix: str) -> dict | None:
    key = json.dumps(f"{store.policy}:{suffix}")
    try:
        rows = await store.cluster.get_docs(store.table(RUNNER), [key])
    except NotFound:
        return None
    return json.loads(rows[0][1]) if rows else None


async def _write(store: StateStore, suffix: str, field: str, value) -> None:
    """Store ``{field: value}`` under ``<policy>:<suffix>`` unless it is already so."""
    found = await _read(store, suffix)
    if found is not None and found.get(field) == value:
        return
    key = f"{store.policy}:{suffix}"
    text = json.dumps({"id": key, field: value}, sort_keys=True, separators=(",", ":"))
    await store.cluster.write_state(store.table(RUNNER), json.dumps(key), text, ALWAYS)


async def store_standby_fence(store: StateStore, record: FenceRecord) -> None:
    await _write(store, STANDBY_FENCE, "fence", record.to_json())


async def read_standby_fence(store: StateStore) -> FenceRecord | None:
    """The standby fence recorded on this cluster, or None."""
    found = await _read(store, STANDBY_FENCE)
    return FenceRecord.from_json(found["fence"]) if found else None


async def fenced_hooks(cluster: Cluster, policy) -> dict[str, bytes | None] | None:
    """For a snapshot of ``cluster`` (drtool.snapshots.snapshot.SnapshotOptions.fenced_hooks):
    the primary's own hooks its write-hook standby fence recorded, or None."""
    if policy.failover.fence != "write-hook":
        return None
    found = await read_standby_fence(state_store(cluster, policy))
    return dict(found.hooks) if found and found.kind == "write-hook" else None


async def read_synced_users(store: StateStore) -> frozenset[str]:
    found = await _read(store, USERS)
    return frozenset(found["users"]) if found else frozenset()


async def store_synced_users(store: StateStore, users: list[str]) -> None:
    await _write(store, USERS, "users", sorted(users))


class HookFence:
    """The write-hook standby fence of one runner direction (``store``: the target's state,
    ``generation``: the runner's), shared by its table replicators."""

    def __init__(self, store: StateStore, generation: int) -> None:
        self.store, self.generation = store, generation
        self.message = standby_fence_message(store.policy, generation)
        self._hooks: dict[str, bytes | None] | None = None
        self._lock = asyncio.Lock()

    async def keep(self, target: Cluster, table: TableName, source_hook: bytes | None,
                   current_hook: bytes | None) -> bool:
        """Record ``source_hook`` as ``table``'s hook to restore on promotion (see the
        module doc), then make sure the target's hook is the fence. Returns True when the
        fence hook was installed now; drtool's own tables are never fenced. Idempotent;
        raises what the cluster raises."""
        if table.db == self.store.db:
            return False
        async with self._lock:
            if self._hooks is None:
                found = await read_standby_fence(self.store)
                self._hooks = dict(found.hooks) if found and found.kind == "write-hook" else {}
            name = str(table)
            if (name not in self._hooks or self._hooks[name] != source_hook) \
                    and not is_drtool_fence(source_hook) \
                    and (await self.store.read_roles()).step is None:
                self._hooks[name] = source_hook
                await store_standby_fence(self.store, FenceRecord(
                    "write-hook", self.generation, hooks=sorted(self._hooks.items())))
        if is_drtool_fence(current_hook, self.message):
            return False
        await target.set_rejecting_write_hook(table, self.message)
        return True

    async def forget(self, table: TableName) -> None:
        """``table`` was dropped on the primary: its hook is no longer recorded (a promotion
        would try to restore it on a table that is gone). Idempotent."""
        async with self._lock:
            found = await read_standby_fence(self.store)
            hooks = dict(found.hooks) if found and found.kind == "write-hook" else {}
            if str(table) in hooks:
                del hooks[str(table)]
                await store_standby_fence(self.store, FenceRecord(
                    "write-hook", self.generation, hooks=sorted(hooks.items())))
            self._hooks = hooks
