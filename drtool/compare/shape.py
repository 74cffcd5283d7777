"""Giving a table the shape of another: creating it, its secondary indexes and write hook.

Shared by restore (a snapshot's table into a cluster) and reconcile (a cluster's table onto
the other cluster). ``plan_shape`` says what to do without doing it (reconcile's dry run);
``apply_shape`` does it. Indexes are recreated from their function blobs, never evaluated.

drtool's fences (drtool.coordination.fence, drtool.coordination.standby_fence) are write hooks that
refuse every write with a message starting ``FENCE_PREFIX``; ``is_drtool_fence`` recognises
them by that message, which the hook's blob carries as text (observed on RethinkDB 2.4.4, the
blob differs between two settings of the same hook; the contract suite checks it). Mirroring
keeps a fence on the target (it is lifted by a promotion, never by copying a shape); a restore
never installs one (a snapshot taken from a fenced standby).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from drtool.cluster.base import Cluster
from drtool.model import IndexDef, TableMeta, TableName

FENCE_PREFIX = "drtool fence: "


def is_drtool_fence(blob: bytes | None, message: str | None = None) -> bool:
    """Whether the write hook ``blob`` is one of drtool's fences (with exactly ``message``,
    when given)."""
    if blob is None:
        return False
    if message is None:
        return json.dumps(FENCE_PREFIX).encode()[:-1] in blob
    return any(json.dumps(message, ensure_ascii=a).encode() in blob for a in (True, False))


async def create_table_like(cluster: Cluster, meta: TableMeta, target: TableName, *,
                            shards: int | None = None, replicas: int | None = None) -> None:
    """Create ``target`` (and its database) with ``meta``'s primary key, durability, write_acks
    and shard and replica counts (unless overridden). Raises ClusterError if the table exists."""
    await cluster.ensure_db(target.db)
    await cluster.create_table(
        target, primary_key=meta.primary_key, shards=shards or meta.shards,
        replicas=replicas or meta.replicas, durability=meta.durability,
        write_acks=meta.write_acks,
    )


@dataclass(frozen=True)
class ShapeAction:
    """``kind``: create index, recreate index, drop index, set write hook, remove write hook."""

    kind: str
    name: str = ""  # index name
    index: IndexDef | None = None
    hook: bytes | None = None

    def __str__(self) -> str:
        return f"{self.kind} {self.name}".rstrip()


@dataclass
class ShapePlan:
    actions: list[ShapeAction] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # differences deliberately left alone


def plan_shape(meta: TableMeta, existing: TableMeta | None, *, mirror: bool) -> ShapePlan:
    """What makes ``existing`` (None: a table just created) have ``meta``'s indexes and hook.

    ``mirror=False`` (restore): only add what is missing; an index with another function is
    left alone (noted); the hook is set when ``meta`` has one. ``mirror=True`` (reconcile):
    make them equal: recreate differing indexes, drop extra ones, set or remove the hook."""
    plan = ShapePlan()
    have = {i.name: i.blob for i in existing.indexes} if existing else {}
    for index in meta.indexes:
        if index.name not in have:
            plan.actions.append(ShapeAction("create index", index.name, index))
        elif have[index.name] != index.blob:
            if mirror:
                plan.actions.append(ShapeAction("recreate index", index.name, index))
            else:
                plan.notes.append(f"index {index.name} exists with another function: left unchanged")
    if mirror:
        wanted = {i.name for i in meta.indexes}
        plan.actions.extend(ShapeAction("drop index", n) for n in sorted(have) if n not in wanted)
    current = existing.write_hook if existing else None
    if is_drtool_fence(meta.write_hook):
        plan.notes.append("write hook: drtool's fence, not copied")
    elif mirror and is_drtool_fence(current):
        plan.notes.append("write hook: drtool's fence kept (a promotion lifts it)")
    elif meta.write_hook is not None and meta.write_hook != current:
        if current is not None and not mirror:
            plan.notes.append("write hook replaced by the snapshot's")
        plan.actions.append(ShapeAction("set write hook", hook=meta.write_hook))
    elif mirror and meta.write_hook is None and current is not None:
        plan.actions.append(ShapeAction("remove write hook"))
    return plan


async def apply_shape(cluster: Cluster, target: TableName, actions: list[ShapeAction]) -> None:
    """Run the actions: index changes, then wait for every index, then the write hook."""
    for action in actions:
        if action.kind in ("recreate index", "drop index"):
            await cluster.drop_index(target, action.name)
        if action.kind in ("create index", "recreate index"):
            assert action.index is not None
            await cluster.create_index(target, action.index)
    await cluster.wait_indexes(target)
    for action in actions:
        if action.kind in ("set write hook", "remove write hook"):
            await cluster.set_write_hook(target, action.hook)
