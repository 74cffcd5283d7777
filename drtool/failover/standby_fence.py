"""What the runner keeps on its target (the standby) between failovers, in the target's
``runner`` table, and the write-hook standby fence.

The standby is fenced from the application at all times, not only during a failover: a write
landing there would be overwritten or deleted by replication. With ``[failover] fence =
"permissions"`` the app users' write permission is False there (drtool.failover.users_sync);
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

import json

from drtool.cluster.base import ALWAYS
from drtool.core.state import RUNNER, StateStore
from drtool.errors import NotFound
from drtool.failover.fence import FenceRecord

STANDBY_FENCE = "standby-fence"
USERS = "users"


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


async def read_synced_users(store: StateStore) -> frozenset[str]:
    found = await _read(store, USERS)
    return frozenset(found["users"]) if found else frozenset()


async def store_synced_users(store: StateStore, users: list[str]) -> None:
    await _write(store, USERS, "users", sorted(users))
