"""The steps failover procedures are made of (drtool.failover.planned/unplanned/failback).

Each step is idempotent: run twice, it does no harm and leaves the same state; the procedure
records the step in roles before starting it (drtool.failover.run), so a killed run repeats at
most the step it was in.
"""

from __future__ import annotations

import asyncio
import time

from drtool.compare.diff import diff_tables
from drtool.compare.reconcile import reconcile_tables
from drtool.compare.shape import is_drtool_fence
from drtool.coordination.state import Roles, format_time, runner_lease
from drtool.errors import DrtoolError, FailoverError
from drtool.coordination.fence import FenceRecord, apply_fence, lift_fence, plan_fence
from drtool.failover.run import FailoverRun
from drtool.coordination.users_sync import standby_fence_users, sync_users
from drtool.model import TableName

POLL = 0.1



async def check_runner(run: FailoverRun, source: str, target: str) -> float:
    """The runner streams into ``target`` (live lease) and its lag is within max_lag;
    returns the lag in seconds."""
    store = run.require(target).store
    lease = await store.read_lease(runner_lease(run.policy.name))  # type: ignore[union-attr]
    if lease is None or lease.expired:
        raise FailoverError(
            f"no drtool replicate runner is streaming into the {target} (no live lease): "
            "start it and wait until drtool status shows it streaming, then run the failover again")
    from drtool.coordination.state import lag_seconds

    lag, _ = await lag_seconds(run.require(source).cluster, store)  # type: ignore[arg-type]
    limit = run.policy.failover.max_lag
    if lag is None or lag > limit:
        shown = "no heartbeat yet" if lag is None else f"{lag:.1f} s behind"
        raise FailoverError(f"the {target} is {shown} (failover.max_lag {limit:g} s): wait until "
                            "the runner catches up (drtool status), then run the failover again")
    return lag


async def fence_plan(run: FailoverRun, role: str, tables: list[TableName], generation: int,
                     *, key: str = "fence") -> FenceRecord:
    """The fence this run recorded under ``key`` when resuming, else a new plan for
    ``role``."""
    recorded = run.progress.get(key)
    if recorded is not None:
        return FenceRecord.from_json(recorded)
    return await plan_fence(run.require(role).cluster, run.policy.failover, tables, generation)  # type: ignore[arg-type]


async def fence(run: FailoverRun, role: str, record: FenceRecord) -> float:
    """Apply the fence on ``role`` (the record is already stored); returns the cluster's
    clock right after it (a heartbeat written later was written after the fence)."""
    cluster = run.require(role).cluster
    await apply_fence(cluster, record)  # type: ignore[arg-type]
    for line in record.describe():
        run.say(f"  fenced: {line}")
    return await cluster.server_time()  # type: ignore[union-attr]


async def drain(run: FailoverRun, source: str, target: str, fenced_at: float) -> float | None:
    """When a runner streams into ``target``: wait until a heartbeat written on ``source``
    after ``fenced_at`` is visible on ``target`` (every change before it went through the
    runner). Returns its time, or None when no runner holds a lease (the final diff alone
    then makes the clusters equal)."""
    store = run.require(target).store
    lease = await store.read_lease(runner_lease(run.policy.name))  # type: ignore[union-attr]
    if lease is None or lease.expired:
        run.say("  no runner streaming: the final diff makes the clusters equal")
        return None
    deadline = time.monotonic() + run.policy.failover.drain_timeout
    while True:
        beat = await store.read_heartbeat()  # type: ignore[union-attr]
        if beat is not None and beat.time >= fenced_at:
            run.say(f"  heartbeat of {format_time(beat.time)} arrived on the {target}")
            return beat.time
        if time.monotonic() > deadline:
            seen = "none" if beat is None else format_time(beat.time)
            raise FailoverError(
                f"no heartbeat written after the fence reached the {target} within "
                f"{run.policy.failover.drain_timeout:g} s (newest there: {seen}): check that "
                "drtool replicate runs, then run the same failover again to resume (the "
                f"{source} stays fenced)")
        await asyncio.sleep(POLL)


async def stop_replication(run: FailoverRun, target: str, *, wait: float) -> bool:
    """Ask the runner to stop (``step = "stop-replication"`` is already recorded on the
    target) and wait up to ``wait`` seconds for it to release its lease. True when no runner
    holds it any more."""
    store = run.require(target).store
    deadline = time.monotonic() + wait
    while True:
        lease = await store.read_lease(runner_lease(run.policy.name))  # type: ignore[union-attr]
        if lease is None or lease.expired:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(POLL)


async def final_diff(run: FailoverRun, source: str, target: str, tables: list[TableName]) -> int:
    """Compare every selected table; reconcile the ones that differ (the source is fenced,
    so nothing changes under it). Returns the number of documents repaired. FailoverError
    when a table still differs."""
    src, dst = run.require(source).cluster, run.require(target).cluster
    diffs = diff_tables(src, dst, tables, source_role=source, target_role=target)  # type: ignore[arg-type]
    differing = [d.table for d in await diffs if not d.documents_equal]
    if not differing:
        run.say(f"  final diff: {len(tables)} tables equal")
        return 0
    run.say(f"  final diff: {len(differing)} tables differ, reconciling {', '.join(map(str, differing))}")
    fixed = await reconcile_tables(src, dst, differing, source_role=source, target_role=target)  # type: ignore[arg-type]
    bad = [str(r.table) for r in fixed if not r.equal_after]
    if bad:
        raise FailoverError(f"tables still differ after reconcile: {', '.join(bad)}; nothing was "
                            f"promoted and the {source} stays fenced: run the failover again")
    return sum(r.written + r.deleted for r in fixed)


async def copy_users(run: FailoverRun, source: str, target: str, tables: list[TableName],
                     fenced: list[FenceRecord] = ()) -> list[str]:
    """Users and permissions made the same on the target (drtool.coordination.users_sync), the
    write permissions of ``fenced`` (fences on the target) left alone; returns the problems
    to report."""
    src, dst = run.require(source).cluster, run.require(target).cluster
    kept = frozenset((u, d, t) for record in fenced for u, d, t, _ in record.writes)
    report = await sync_users(src, dst, run.policy.failover, tables, keep_fenced=kept,  # type: ignore[arg-type]
                              fence_users=standby_fence_users(run.policy.failover))
    return report.problems


async def promote(run: FailoverRun, source: str, target: str, generation: int, *,
                  replicate: bool, extra: dict) -> Roles:
    """Roles with ``generation + 1`` and ``target`` as primary, written on the target first,
    then on the source when reachable. Resumable: a cluster already at the new generation is
    left alone."""
    roles = Roles(generation=generation + 1, primary=target, step="unfence",
                  replicate=replicate, extra=extra)
    for role in (target, source):
        side = run.side(role)
        if side.reachable and (side.roles is None or side.roles.generation <= generation):
            await run.record(roles, only=(role,))
        elif side.reachable and side.roles.generation > generation + 1:
            raise FailoverError(f"{role} records generation {side.roles.generation}: another "
                                "failover happened meanwhile; run drtool status")
    run.say(f"  generation {generation + 1}: the {target} is the primary")
    return roles


async def unfence(run: FailoverRun, role: str, records: list[FenceRecord]) -> list[str]:
    """Lift ``records`` on the new primary, in order (the last one's values win). With the
    write-hook fence, a selected table still carrying one of drtool's fence hooks afterwards
    (its own hook never recorded: created during a failover) gets no hook, and is named."""
    skipped: list[str] = []
    cluster = run.require(role).cluster
    for record in records:
        try:
            skipped += await lift_fence(cluster, record)  # type: ignore[arg-type]
        except DrtoolError as err:
            skipped.append(str(err))
    if run.policy.failover.fence == "write-hook":
        for table in await run.selected_tables(role):
            if is_drtool_fence((await cluster.table_meta(table)).write_hook):  # type: ignore[union-attr]
                await cluster.set_write_hook(table, None)  # type: ignore[union-attr]
                skipped.append(f"write hook of {table}: its own hook was never recorded; "
                               "drtool's fence removed, set the table's hook again if it had one")
    return skipped
